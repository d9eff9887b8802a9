/**
 * The "Asgard" side panel: every Asgard kernel of this server with its Slurm job, a button to shut one
 * down and release its allocation, detachable kernels the server found or that ended while detached
 * (detachedsection.ts), the user's named containers (containersection.ts), image imports (importsection.ts),
 * and the cluster's partitions with their free GPUs. A kernel that runs away from its container says so on its
 * card, with "Bring it here" (containermove.ts).
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { refreshIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { IKernelRow, IPartition, ITerminalReply, IWhileDetachedEntry } from './api';
import { ContainerActions } from './containeractions';
import { ContainerMoveBox } from './containermove';
import { ContainerSection } from './containersection';
import { ContainersModel } from './containersmodel';
import { DETACHABLE_TOOLTIP, omittedWords, shownOutput, whileDetachedTitle } from './detach';
import { DetachedSection } from './detachedsection';
import { ImportSection } from './importsection';
import { ImportsModel } from './importsmodel';
import { element, section } from './dom';
import {
  freeGpuWords,
  gpuWords,
  encryptionWords,
  idleWords,
  imageName,
  nodeWords,
  notebookName,
  phaseOf,
  stateWords,
  timeLeft,
  timeLimitWords
} from './format';
import { AsgardModel } from './model';

export interface IPanelOptions {
  model: AsgardModel;
  /** This server's image imports (their own poll). */
  imports: ImportsModel;
  /** The user's named containers (their own poll). */
  containers: ContainersModel;
  /** Open a notebook (by its path relative to the server root). */
  openPath: (path: string) => void;
  /** Open a terminal the server made in a kernel's container. */
  openTerminal: (terminal: ITerminalReply) => Promise<void>;
}

/** The elements of one kernel's card that change between polls. */
interface ICard {
  node: HTMLElement;
  name: HTMLElement;
  state: HTMLElement;
  fields: { [label: string]: HTMLElement };
  button: HTMLButtonElement;
  container: ContainerActions;
  /** Where the kernel's container is when not on its node, "Bring it here" and how that goes. */
  move: ContainerMoveBox;
  /** The "detachable" tag, shown for a detachable kernel. */
  tag: HTMLElement;
  /** "While detached:" and what the kernel printed then, shown once there is any. */
  whileDetached: HTMLElement;
  /** The entries it shows (the model keeps the same array until it fetches new ones). */
  shownEntries: readonly IWhileDetachedEntry[] | null;
}

const FIELDS = ['Node', 'GPUs', 'Time left', 'Idle', 'Image', 'Job', 'Traffic'];

export class AsgardPanel extends Widget {
  constructor(options: IPanelOptions) {
    super();
    this.model = options.model;
    this.imports = options.imports;
    this.containers = options.containers;
    this.openPath = options.openPath;
    this.openTerminal = options.openTerminal;
    this.addClass('jp-asgard-Panel');

    const header = element('div', 'jp-asgard-Panel-header');
    const title = element('h2', 'jp-asgard-Panel-title', 'Asgard');
    const refresh = element('button', 'jp-asgard-Panel-refresh jp-Button jp-mod-minimal');
    refresh.title = 'Refresh';
    refresh.setAttribute('aria-label', 'Refresh');
    refreshIcon.element({ container: refresh, tag: 'span' });
    refresh.addEventListener('click', () => {
      this.model.resourcesWanted = true; // fetches the partitions again too
      void this.model.refresh();
      void this.imports.refresh();
      void this.containers.refresh();
    });
    header.append(title, refresh);

    this.kernelList.className = 'jp-asgard-KernelList';
    this.partitionBox.className = 'jp-asgard-Partitions';
    this.detachedSection = new DetachedSection(this.model.detached, this.openPath);
    this.importSection = new ImportSection(this.imports);
    this.containerSection = new ContainerSection(this.containers, () => this.model.kernels);
    this.node.append(
      header,
      this.banner,
      section('Kernels', this.kernelList),
      this.detachedSection.node,
      this.containerSection.node,
      this.importSection.node,
      section('Partitions', this.partitionBox)
    );
    this.banner.className = 'jp-asgard-Panel-banner';
    this.model.changed.connect(this.render, this);
    this.render();
  }

  dispose(): void {
    if (!this.isDisposed) {
      this.model.changed.disconnect(this.render, this);
    }
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.resourcesWanted = true;
    this.containers.wanted = true;
    void this.imports.refresh();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.resourcesWanted = false;
    this.containers.wanted = false;
  }

  private render(): void {
    const model = this.model;
    const problem = model.error
      ? `The Asgard API does not answer: ${model.error}`
      : !model.slurmReachable
        ? `Slurm is unreachable from the Jupyter server${model.slurmError ? `: ${model.slurmError}` : ''}. States are the last known.`
        : '';
    this.banner.textContent = problem;
    this.banner.hidden = !problem;
    this.renderKernels(model.kernels);
    this.detachedSection.render();
    this.renderContainers(model.kernels);
    this.renderPartitions(model.partitions, model.resourcesError);
  }

  private renderKernels(rows: readonly IKernelRow[]): void {
    const seen = new Set<string>();
    let previous: Element | null = null;
    for (const row of rows) {
      seen.add(row.kernel_id);
      let card = this.cards.get(row.kernel_id);
      if (!card) {
        card = this.createCard(row.kernel_id);
        this.cards.set(row.kernel_id, card);
      }
      updateCard(card, row, this.shuttingDown.has(row.kernel_id));
      updateWhileDetached(card, this.model.detached.whileDetached(row.kernel_id));
      const expected: Element | null = previous ? previous.nextElementSibling : this.kernelList.firstElementChild;
      if (expected !== card.node) {
        this.kernelList.insertBefore(card.node, expected); // only moves what is out of place
      }
      previous = card.node;
    }
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.node.remove();
        this.cards.delete(id);
        this.shuttingDown.delete(id);
      }
    }
    this.emptyNote.textContent = this.model.loaded ? 'No Asgard kernels run on this server.' : 'Loading…';
    if (rows.length) {
      this.emptyNote.remove();
    } else if (!this.emptyNote.isConnected) {
      this.kernelList.append(this.emptyNote);
    }
  }

  /** The containers' kernels (names, nodes), and the listing anew when kernels came or went: it lists theirs. */
  private renderContainers(rows: readonly IKernelRow[]): void {
    const kernels = rows
      .filter(row => row.container && row.node)
      .map(row => `${row.kernel_id}@${row.node}`)
      .join(' ');
    if (kernels !== this.containerKernels) {
      this.containerKernels = kernels;
      if (this.isVisible) {
        void this.containers.refresh();
      }
    }
    this.containerSection.render();
  }

  private createCard(kernelId: string): ICard {
    const node = element('div', 'jp-asgard-Kernel');
    node.dataset.kernelId = kernelId;
    const head = element('div', 'jp-asgard-Kernel-head');
    const name = element('span', 'jp-asgard-Kernel-name');
    name.addEventListener('click', () => {
      if (name.dataset.path) {
        this.openPath(name.dataset.path);
      }
    });
    const button = element('button', 'jp-asgard-Kernel-shutdown jp-Button');
    button.type = 'button';
    button.addEventListener('click', () => void this.shutdown(kernelId));
    const tag = element('span', 'jp-asgard-Kernel-tag', 'detachable');
    tag.title = DETACHABLE_TOOLTIP;
    head.append(name, tag);
    const state = element('div', 'jp-asgard-Kernel-state');
    const list = element('dl', 'jp-asgard-Kernel-fields');
    const fields: { [label: string]: HTMLElement } = {};
    for (const label of FIELDS) {
      const value = element('dd', '');
      value.dataset.field = label;
      list.append(element('dt', '', label), value);
      fields[label] = value;
    }
    const container = new ContainerActions(kernelId, { api: this.model.api, openTerminal: this.openTerminal });
    const move = new ContainerMoveBox(kernelId, {
      api: this.model.api,
      follow: () => this.model.hurry()
    });
    const actions = element('div', 'jp-asgard-Kernel-actions');
    actions.append(container.terminal, container.save, button);
    const whileDetached = element('div', 'jp-asgard-WhileDetached');
    whileDetached.hidden = true;
    node.append(head, state, move.node, list, whileDetached, actions, container.status);
    return { node, name, state, fields, button, container, move, tag, whileDetached, shownEntries: null };
  }

  /** The container actions of a kernel's card (the status bar's menu uses them), if the panel shows it. */
  containerActions(kernelId: string): ContainerActions | undefined {
    return this.cards.get(kernelId)?.container;
  }

  private async shutdown(kernelId: string): Promise<void> {
    const row = this.model.kernels.find(candidate => candidate.kernel_id === kernelId);
    if (!row || this.shuttingDown.has(kernelId)) {
      return;
    }
    const what = notebookName(row.path) || row.display_name || kernelId;
    const job = row.job_id ? `Slurm job ${row.job_id}` : 'its Slurm job';
    const answer = await showDialog({
      title: 'Shut down the kernel?',
      body: `The kernel of ${what} stops, and ${job} is cancelled: its GPUs go back to the cluster.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Shut Down' })]
    });
    if (!answer.button.accept) {
      return;
    }
    this.shuttingDown.add(kernelId);
    this.render();
    try {
      await this.model.shutdown(kernelId);
    } catch (error) {
      this.shuttingDown.delete(kernelId);
      this.render();
      Notification.error(
        `Could not shut down the kernel of ${what}: ${error instanceof Error ? error.message : String(error)}`,
        {
          autoClose: false
        }
      );
    }
  }

  private renderPartitions(partitions: readonly IPartition[] | null, error: string): void {
    const key = JSON.stringify([partitions, error]);
    if (key === this.partitionsKey) {
      return;
    }
    this.partitionsKey = key;
    this.partitionBox.replaceChildren();
    if (error) {
      this.partitionBox.append(element('p', 'jp-asgard-Panel-note', `Partitions unavailable: ${error}`));
    }
    if (!partitions) {
      if (!error) {
        this.partitionBox.append(element('p', 'jp-asgard-Panel-note', 'Loading…'));
      }
      return;
    }
    const list = element('div', 'jp-asgard-PartitionList');
    for (const partition of partitions) {
      const item = element('div', 'jp-asgard-Partition');
      item.dataset.partition = partition.name;
      const up = partition.available === 'up';
      item.classList.toggle('jp-mod-unavailable', !up);
      const head = element('div', 'jp-asgard-Partition-head');
      head.append(element('span', 'jp-asgard-Partition-name', partition.name));
      if (partition.default) {
        head.append(element('span', 'jp-asgard-Partition-badge', 'default'));
      }
      if (!up) {
        head.append(element('span', 'jp-asgard-Partition-badge jp-mod-down', partition.available));
      }
      head.append(element('span', 'jp-asgard-Partition-limit', timeLimitWords(partition.time_limit)));
      item.append(
        head,
        element('div', 'jp-asgard-Partition-gpus', freeGpuWords(partition.gpus) || 'no GPUs'),
        element('div', 'jp-asgard-Partition-nodes', nodeWords(partition.nodes))
      );
      const cpus = partition.cpus ? `${partition.cpus.idle} of ${partition.cpus.total} CPUs idle` : '';
      item.title = [partition.nodes.map(node => `${node.name}: ${node.state}`).join('\n'), cpus]
        .filter(part => part)
        .join('\n');
      list.append(item);
    }
    if (!partitions.length) {
      this.partitionBox.append(element('p', 'jp-asgard-Panel-note', 'Slurm lists no partitions for you.'));
    } else {
      this.partitionBox.append(list);
    }
  }

  private readonly model: AsgardModel;
  private readonly imports: ImportsModel;
  private readonly detachedSection: DetachedSection;
  private readonly importSection: ImportSection;
  private readonly containers: ContainersModel;
  private readonly containerSection: ContainerSection;
  private readonly openPath: (path: string) => void;
  private readonly openTerminal: (terminal: ITerminalReply) => Promise<void>;
  private readonly banner = document.createElement('div');
  private readonly kernelList = document.createElement('div');
  private readonly partitionBox = document.createElement('div');
  private readonly emptyNote = element('p', 'jp-asgard-Panel-note');
  private readonly cards = new Map<string, ICard>();
  private readonly shuttingDown = new Set<string>();
  private partitionsKey = '';
  /** The kernels in containers as of the last render ("id@node ..."). */
  private containerKernels = '';
}

function updateCard(card: ICard, row: IKernelRow, shuttingDown: boolean): void {
  const name = notebookName(row.path);
  card.node.dataset.phase = phaseOf(row.state);
  card.name.textContent = name || row.display_name || row.kernel_id;
  card.name.title = row.path ? `${row.path}\n${row.display_name}` : row.display_name;
  card.name.dataset.path = row.path;
  card.name.classList.toggle('jp-mod-link', !!row.path);
  card.state.textContent = stateWords(row);
  const values: { [label: string]: string } = {
    Node: row.node || '—',
    GPUs: gpuWords(row.gpus) || 'none',
    'Time left': (phaseOf(row.state) === 'running' && timeLeft(row)) || '—',
    Idle: (phaseOf(row.state) === 'running' && idleWords(row)) || '—',
    Image: imageName(row.image) || '—',
    Job: row.job_id ? `${row.job_id}${row.partition ? `, partition ${row.partition}` : ''}` : 'not submitted yet',
    Traffic: encryptionWords(row.encryption) || '—'
  };
  for (const label of FIELDS) {
    card.fields[label].textContent = values[label];
  }
  card.fields.Image.title = row.image;
  card.button.disabled = shuttingDown;
  card.button.textContent = shuttingDown ? 'Shutting down…' : 'Shut down';
  card.button.title = 'Shut the kernel down and release its Slurm allocation';
  card.container.update(row);
  card.move.update(row);
  card.tag.hidden = !row.detachable;
}

/** The card's "While detached:": what the kernel printed while no server held it, its newest part. */
function updateWhileDetached(card: ICard, entries: readonly IWhileDetachedEntry[]): void {
  if (entries === card.shownEntries) {
    return;
  }
  card.shownEntries = entries;
  const box = card.whileDetached;
  box.replaceChildren();
  box.hidden = !entries.length;
  if (!entries.length) {
    return;
  }
  const shown = shownOutput(entries);
  const output = element('pre', 'jp-asgard-WhileDetached-output');
  if (shown.omitted) {
    output.append(element('span', 'jp-asgard-WhileDetached-omitted', `${omittedWords(shown.omitted)}\n`));
  }
  for (const part of shown.parts) {
    const span = element('span', `jp-asgard-WhileDetached-${part.kind}`, part.text);
    if (part.kind === 'error') {
      span.classList.add('jp-mod-error');
      span.title = 'An error the kernel raised while detached';
    }
    output.append(span);
  }
  const title = element('div', 'jp-asgard-WhileDetached-title', 'While detached:');
  box.title = whileDetachedTitle(entries);
  // Its box scrolls from the bottom (column-reverse): the newest output is in view, hidden panel or not.
  const scroller = element('div', 'jp-asgard-WhileDetached-scroll');
  scroller.append(output);
  box.append(title, scroller);
}
