/**
 * A kernel card's container actions: a terminal in the kernel's container on its node, and saving the
 * container (what was installed in it) as an image of the user's own. Both need a kernel that runs.
 */
import { InputDialog, Notification } from '@jupyterlab/apputils';

import { AsgardAPI, IImageSave, IKernelRow, ITerminalReply } from './api';
import { phaseOf } from './format';

/** How often a save in progress is asked after. */
const SAVE_POLL_MS = 2000;

export interface IContainerActionsOptions {
  api: AsgardAPI;
  /** Open the terminal the server made, in JupyterLab's main area. */
  openTerminal: (terminal: ITerminalReply) => Promise<void>;
}

export class ContainerActions {
  constructor(
    private readonly kernelId: string,
    private readonly options: IContainerActionsOptions
  ) {
    this.terminal.type = 'button';
    this.terminal.className = 'jp-asgard-Kernel-terminal jp-Button jp-mod-styled';
    this.terminal.textContent = 'Terminal';
    this.terminal.title = "Open a terminal in this kernel's container, on its node";
    this.terminal.addEventListener('click', () => void this.openTerminal());
    this.save.type = 'button';
    this.save.className = 'jp-asgard-Kernel-saveImage jp-Button jp-mod-styled';
    this.save.textContent = 'Save image…';
    this.save.title = "Save this kernel's container, with what was installed in it, as an image of your own";
    this.save.addEventListener('click', () => void this.askAndSave());
    this.status.className = 'jp-asgard-Kernel-save';
    this.status.hidden = true;
  }

  readonly terminal = document.createElement('button');
  readonly save = document.createElement('button');
  /** The latest save's progress or error. */
  readonly status = document.createElement('div');

  update(row: IKernelRow): void {
    const running = phaseOf(row.state) === 'running' && !!row.node && !row.phase;
    this.terminal.disabled = !running;
    this.save.disabled = !running || this.saving;
  }

  async openTerminal(): Promise<void> {
    try {
      await this.options.openTerminal(await this.options.api.openTerminal(this.kernelId));
    } catch (error) {
      Notification.error(`No terminal in the kernel's container: ${messageOf(error)}`, { autoClose: false });
    }
  }

  async askAndSave(): Promise<void> {
    const answer = await InputDialog.getText({
      title: 'Save environment as image',
      label: "Image name (saved as NAME.sqsh in your image directory, with the container's package list)",
      placeholder: 'my-env',
      okLabel: 'Save'
    });
    if (answer.button.accept && answer.value) {
      await this.saveAs(answer.value.trim());
    }
  }

  async saveAs(name: string): Promise<void> {
    this.saving = true;
    this.save.disabled = true;
    try {
      let save = await this.options.api.saveImage(this.kernelId, name);
      this.show(save);
      while (save.state === 'saving') {
        await new Promise(resolve => setTimeout(resolve, SAVE_POLL_MS));
        save = await this.options.api.imageSave(this.kernelId);
        this.show(save);
      }
    } catch (error) {
      this.showText(`Not saved: ${messageOf(error)}`, 'failed');
    } finally {
      this.saving = false;
      this.save.disabled = this.terminal.disabled;
    }
  }

  private show(save: IImageSave): void {
    const words = {
      saving: `Saving as ${save.path}…`,
      saved: `Saved ${save.path} (${save.packages} Python packages listed in ${save.path}.json)`,
      failed: `Not saved: ${save.message}`
    };
    this.showText(words[save.state], save.state);
  }

  private showText(text: string, state: string): void {
    this.status.hidden = false;
    this.status.textContent = text;
    this.status.dataset.state = state;
  }

  private saving = false;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
