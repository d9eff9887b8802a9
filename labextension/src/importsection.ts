/**
 * The side panel's "Images" section: "Import image…" asks for a registry image (an enroot URI) and a name, and
 * each import of this server gets a row: where it stands (the Slurm queue, enroot's layers and then the squashfs
 * as a progress bar),
 * Cancel while it runs, and how it ended: the image's path, or the server's message and hint.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IImageImport, IProblem, problemOf } from './api';
import { cardButton, element, problemNode, section } from './dom';
import { importTitle, isRunning, NAME_LABEL, progressBar, URI_LABEL, URI_PLACEHOLDER } from './imports';
import type { ImportsModel } from './importsmodel';

export class ImportSection {
  constructor(private readonly model: ImportsModel) {
    const button = cardButton(
      'jp-asgard-Images-import',
      'Import image…',
      'Import a registry image (e.g. from nvcr.io) into your image directory, as a Slurm job on a compute node',
      () => void this.askAndImport()
    );
    this.list.className = 'jp-asgard-ImportList';
    const content = element('div', 'jp-asgard-Images');
    content.append(button, this.problem, this.list);
    this.node = section('Images', content);
    this.node.classList.add('jp-asgard-ImagesSection');
    this.model.changed.connect(this.render, this);
    this.render();
  }

  readonly node: HTMLElement;

  /** Ask for the image in a dialog, then start its import; a refusal shows in the section. */
  async askAndImport(): Promise<void> {
    const answer = await showDialog({
      title: 'Import image',
      body: new ImportForm(),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Import' })],
      focusNodeSelector: 'input'
    });
    if (!answer.button.accept || !answer.value) {
      return;
    }
    this.refusal = null;
    try {
      await this.model.start(answer.value.uri, answer.value.name);
    } catch (error) {
      this.refusal = problemOf(error);
    }
    this.render();
  }

  /** Draw what the model knows now; nothing is redrawn while it is what is shown (a button keeps its focus). */
  render(): void {
    const shown = this.model.imports.filter(found => !this.dismissed.has(found.id));
    const key = JSON.stringify([shown, this.model.error, this.refusal, [...this.cancelling]]);
    if (key === this.shownKey) {
      return;
    }
    this.shownKey = key;
    this.problem.replaceChildren();
    const problem = this.refusal ?? this.model.error;
    if (problem) {
      this.problem.append(
        problemNode('jp-asgard-Import', problem, this.refusal ? 'Not imported: ' : 'Imports unavailable: ')
      );
    }
    this.list.replaceChildren(...shown.map(found => this.importNode(found)));
  }

  private importNode(found: IImageImport): HTMLElement {
    const node = element('div', 'jp-asgard-Import');
    node.dataset.importId = found.id;
    node.dataset.state = found.state;
    node.title = importTitle(found);
    node.append(element('div', 'jp-asgard-Import-name', found.name));
    if (found.state === 'failed') {
      node.append(problemNode('jp-asgard-Import', { message: found.message || found.status, hint: found.hint }));
    } else {
      node.append(element('div', 'jp-asgard-Import-status', found.status));
    }
    const progress = progressBar(found);
    if (progress) {
      const bar = element('progress', 'jp-asgard-Import-progress');
      bar.max = progress.max;
      bar.value = progress.value;
      bar.setAttribute('aria-label', progress.words);
      const row = element('div', 'jp-asgard-Import-bar');
      row.append(bar, element('span', 'jp-asgard-Import-progressWords', progress.words));
      node.append(row);
    }
    const actions = element('div', 'jp-asgard-Kernel-actions');
    if (isRunning(found)) {
      const cancelling = this.cancelling.has(found.id);
      const cancel = cardButton(
        'jp-asgard-Import-cancel',
        cancelling ? 'Cancelling…' : 'Cancel',
        'Cancel this import: its Slurm job ends, and nothing of the image is kept',
        () => void this.cancel(found.id)
      );
      cancel.disabled = cancelling;
      actions.append(cancel);
    } else {
      actions.append(
        cardButton('jp-asgard-Import-dismiss', 'Dismiss', 'Hide this ended import', () => {
          this.dismissed.add(found.id);
          this.render();
        })
      );
    }
    node.append(actions);
    return node;
  }

  private async cancel(importId: string): Promise<void> {
    if (this.cancelling.has(importId)) {
      return;
    }
    this.cancelling.add(importId);
    this.refusal = null;
    this.render();
    try {
      await this.model.cancel(importId);
    } catch (error) {
      this.refusal = problemOf(error);
    } finally {
      this.cancelling.delete(importId);
      this.render();
    }
  }

  private readonly list = document.createElement('div');
  private readonly problem = element('div', 'jp-asgard-Images-problem');
  /** The server's refusal of the user's last start or cancel, shown until the next. */
  private refusal: IProblem | null = null;
  private readonly cancelling = new Set<string>();
  /** Ended imports the user hid (for as long as this page lives). */
  private readonly dismissed = new Set<string>();
  private shownKey = '';
}

/** The dialog's body: the image's URI and an optional name. */
class ImportForm extends Widget implements Dialog.IBodyWidget<{ uri: string; name: string }> {
  constructor() {
    super();
    this.addClass('jp-asgard-ImportForm');
    this.uriInput.placeholder = URI_PLACEHOLDER;
    this.nameInput.placeholder = 'e.g. pytorch-24.05';
    for (const [text, input] of [
      [URI_LABEL, this.uriInput],
      [NAME_LABEL, this.nameInput]
    ] as const) {
      input.type = 'text';
      input.className = 'jp-mod-styled';
      input.spellcheck = false;
      const label = element('label', 'jp-asgard-ImportForm-field', text);
      label.append(input);
      this.node.append(label);
    }
    this.uriInput.classList.add('jp-asgard-ImportForm-uri');
    this.nameInput.classList.add('jp-asgard-ImportForm-name');
  }

  getValue(): { uri: string; name: string } {
    return { uri: this.uriInput.value.trim(), name: this.nameInput.value.trim() };
  }

  private readonly uriInput = document.createElement('input');
  private readonly nameInput = document.createElement('input');
}
