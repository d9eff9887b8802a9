/**
 * A kernel whose start failed says why, in JupyterLab's own "Error Starting Kernel" dialog.
 *
 * The server extension turns on jupyter_server's pending kernels, so that a kernel waiting in the Slurm queue
 * holds no HTTP request open. JupyterLab then gets its session at once, and when the start fails later it
 * shows only "Disconnected" (JupyterLab 4.6 shows the dialog for a failed session request alone). The kernel
 * model still carries the reason and how to fix it: this shows it, once per kernel, for every notebook or
 * console in the main area.
 */
import { Dialog, ISessionContext, showDialog } from '@jupyterlab/apputils';
import { KernelAPI, ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { sessionContextOf } from './statusbar';

export const DIALOG_TITLE = 'Error Starting Kernel';

export class StartErrors {
  constructor(private readonly settings: ServerConnection.ISettings) {}

  /** Watch the session contexts of these widgets that are not watched yet. */
  watchAll(widgets: Iterable<Widget>): void {
    for (const widget of widgets) {
      const context = sessionContextOf(widget);
      if (context && !this.watched.has(context)) {
        this.watched.add(context);
        context.statusChanged.connect(this.onStatus, this);
      }
    }
  }

  private onStatus(context: ISessionContext, status: string): void {
    const kernelId = context.session?.kernel?.id;
    if (status === 'dead' && kernelId && !this.shown.has(kernelId)) {
      void this.report(kernelId);
    }
  }

  private async report(kernelId: string): Promise<void> {
    let reason: string | undefined;
    try {
      const model = await KernelAPI.getKernelModel(kernelId, this.settings);
      reason = model?.execution_state === 'dead' ? model.reason : undefined;
    } catch {
      return; // the server is gone: JupyterLab says so itself
    }
    if (!reason || this.shown.has(kernelId) || dialogShown()) {
      return;
    }
    this.shown.add(kernelId);
    const body = new Widget({ node: document.createElement('pre') });
    body.node.textContent = reason;
    await showDialog({ title: DIALOG_TITLE, body, buttons: [Dialog.okButton()] });
  }

  private readonly watched = new WeakSet<ISessionContext>();
  private readonly shown = new Set<string>();
}

/** Whether JupyterLab shows its own dialog for it already (as it does where the session request failed). */
function dialogShown(): boolean {
  return Array.from(document.querySelectorAll('.jp-Dialog-header')).some(header =>
    header.textContent?.includes(DIALOG_TITLE)
  );
}
