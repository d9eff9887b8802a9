/**
 * The status bar item: where the active notebook's or console's Asgard kernel stands in Slurm.
 * Hidden for every other kernel; a click opens the side panel. A kernel that runs away from its named container
 * (what the user installed in it is on another node) is marked: "⚠ container on gpu02", the notice in full as
 * its tooltip.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { ISessionContext } from '@jupyterlab/apputils';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { IKernelRow } from './api';
import { NOTICE_MARK, shortNotice } from './containers';
import { describe, details, phaseOf, stateWords } from './format';
import { asgardIcon } from './icon';
import { AsgardModel } from './model';

/** The session context of a notebook or console panel (or any widget that has one). */
export function sessionContextOf(widget: Widget | null): ISessionContext | null {
  const context = (widget as { sessionContext?: ISessionContext } | null)?.sessionContext;
  return context && typeof context.path === 'string' && context.kernelChanged ? context : null;
}

export interface IStatusOptions {
  model: AsgardModel;
  shell: JupyterFrontEnd.IShell;
  /** Whether a kernelspec (by name) may start an Asgard kernel: only those make the poller hurry. */
  mayBeAsgard: (kernelName: string | undefined) => boolean;
  onClick: () => void;
}

export class AsgardStatus extends Widget {
  constructor(options: IStatusOptions) {
    super();
    const { model, shell, onClick } = options;
    this.model = model;
    this.shell = shell;
    this.mayBeAsgard = options.mayBeAsgard;
    this.addClass('jp-asgard-StatusItem');
    this.node.setAttribute('role', 'button');
    this.node.tabIndex = 0;
    asgardIcon.element({ container: this.iconNode, tag: 'span', className: 'jp-asgard-StatusItem-icon' });
    this.node.append(this.iconNode, this.textNode, this.noticeNode);
    this.textNode.className = 'jp-asgard-StatusItem-text';
    this.noticeNode.className = 'jp-asgard-StatusItem-notice';
    this.noticeNode.hidden = true;
    this.node.addEventListener('click', onClick);
    this.node.addEventListener('keydown', event => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        onClick();
      }
    });
    model.changed.connect(this.refresh, this);
    shell.currentChanged?.connect(this.onCurrentChanged, this);
    this.onCurrentChanged();
  }

  /** Whether the active notebook or console has an Asgard kernel: the status bar shows the item only then. */
  get hasRow(): boolean {
    return this.row !== undefined;
  }

  /** The active notebook's or console's Asgard kernel, as of the model's last poll. */
  get currentRow(): IKernelRow | undefined {
    return this.row;
  }

  get activeChanged(): ISignal<this, void> {
    return this._activeChanged;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.watch(null);
    this.model.changed.disconnect(this.refresh, this);
    this.shell.currentChanged?.disconnect(this.onCurrentChanged, this);
    super.dispose();
  }

  /** Show the row of the active widget's kernel, as of the model's last poll. */
  refresh(): void {
    const context = this.context;
    const kernelId = context?.session?.kernel?.id;
    const row = context ? this.model.rowFor(kernelId, context.path) : undefined;
    const wasActive = this.row !== undefined;
    this.row = row;
    if (row) {
      this.textNode.textContent = describe(row);
      const notice = shortNotice(row);
      this.noticeNode.hidden = !notice;
      this.noticeNode.textContent = notice ? `${NOTICE_MARK} ${notice.text}` : '';
      this.noticeNode.title = notice?.title ?? '';
      this.node.title = [notice?.title, details(row), 'Click for the Asgard panel.'].filter(line => line).join('\n');
      this.node.dataset.phase = phaseOf(row.state);
    }
    if (wasActive !== (row !== undefined)) {
      this._activeChanged.emit();
    }
  }

  private onCurrentChanged(): void {
    this.watch(sessionContextOf(this.shell.currentWidget));
    this.refresh();
  }

  private watch(context: ISessionContext | null): void {
    if (this.context) {
      this.context.kernelChanged.disconnect(this.onKernelActivity, this);
      this.context.statusChanged.disconnect(this.onKernelActivity, this);
      this.context.sessionChanged.disconnect(this.onKernelActivity, this);
      this.context.kernelPreferenceChanged.disconnect(this.onKernelActivity, this);
    }
    this.context = context;
    if (context) {
      context.kernelChanged.connect(this.onKernelActivity, this);
      context.statusChanged.connect(this.onKernelActivity, this);
      context.sessionChanged.connect(this.onKernelActivity, this);
      context.kernelPreferenceChanged.connect(this.onKernelActivity, this);
      if (!context.session?.kernel && this.wantsAsgard()) {
        this.model.hurry(); // an Asgard kernel may be starting (and waiting in the queue) for it
      }
    }
  }

  private onKernelActivity(): void {
    const kernel = this.context?.session?.kernel;
    const starting =
      kernel?.status === 'starting' || kernel?.status === 'restarting' || kernel?.status === 'autorestarting';
    // Poll faster while the kernel starts, and once more when it is up but the last row says otherwise.
    const stale = kernel?.status === 'idle' && this.row !== undefined && /starting$/.test(stateWords(this.row));
    if ((!kernel || starting || stale) && this.wantsAsgard()) {
      this.model.hurry();
    }
    this.refresh();
  }

  /** Whether the active widget's kernel is, or is to be, of an Asgard kernelspec. */
  private wantsAsgard(): boolean {
    const context = this.context;
    return !!context && this.mayBeAsgard(context.session?.kernel?.name ?? context.kernelPreference.name);
  }

  private readonly model: AsgardModel;
  private readonly shell: JupyterFrontEnd.IShell;
  private readonly mayBeAsgard: (kernelName: string | undefined) => boolean;
  private context: ISessionContext | null = null;
  private row: IKernelRow | undefined = undefined;
  private readonly iconNode = document.createElement('span');
  private readonly textNode = document.createElement('span');
  /** The kernel's container notice, in short. */
  private readonly noticeNode = document.createElement('span');
  private _activeChanged = new Signal<this, void>(this);
}
