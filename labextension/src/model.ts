/**
 * One poller of the API for the whole front end: the status bar item and the side panel read its rows.
 *
 * Every 5 s while the browser tab is visible; every second while a kernel waits in the queue, ends, has
 * less than a minute left or has its container brought to its node; twice a second while a kernel starts (and for a while after someone asks it to
 * hurry: a kernel may be about to start), so that a container phase of a second or two still shows; never
 * while the tab is hidden, and at once when it is shown again; backing off up to a minute while the server
 * does not answer. The cluster's partitions are fetched only while the side panel is shown; detachable
 * kernels (the server's found and ended ones, what its own printed while detached) by the same poll, at
 * their own pace (detachedmodel.ts). Lumino's Poll does the scheduling, the standby and the back-off; this
 * model chooses the rate after each answer.
 */
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { AsgardAPI, IKernelRow, IKernelsReply, IPartition } from './api';
import { moveUnderway } from './containers';
import { DetachedModel } from './detachedmodel';
import { phaseOf, stateWords } from './format';
import type { IKeyValueStore } from './sentalerts';

export interface IPollTimes {
  /** While a kernel starts (its container's phases can last a second or two), in ms. */
  starting: number;
  /** While a kernel is queued or ending, in ms. */
  fast: number;
  /** Otherwise, in ms. */
  slow: number;
  /** The longest back-off after failures (each wait up to twice the one before), in ms. */
  max: number;
  /** How often the partitions are fetched while the panel is shown, in ms. */
  resources: number;
  /** How often the detached kernels are listed (at once when the server answers again), in ms. */
  detached: number;
}

export const POLL_TIMES: IPollTimes = {
  starting: 500,
  fast: 1000,
  slow: 5000,
  max: 60000,
  resources: 10000,
  detached: 10000
};

/** A kernel between its submission and its first answer: its job starting, or its container and kernel. */
function starting(row: IKernelRow): boolean {
  return /^(re)?starting/.test(stateWords(row));
}

export class AsgardModel implements IDisposable {
  /** store: where dismissed ended kernels are remembered (the browser's localStorage), or null. */
  constructor(
    readonly api: AsgardAPI,
    private readonly times: IPollTimes = POLL_TIMES,
    store: IKeyValueStore | null = null
  ) {
    this.detached = new DetachedModel(api, { every: times.detached, store, refresh: () => this.refresh() });
    this._poll = new Poll({
      factory: () => this.poll(),
      frequency: { interval: times.slow, backoff: 2, max: times.max },
      linger: 0, // no poll at all in a hidden tab
      name: 'jupyter-asgard:kernels',
      standby: 'when-hidden'
    });
    document.addEventListener('visibilitychange', this.onVisibility);
  }

  /** Detachable kernels: found and ended ones, and what the server's own printed while detached. */
  readonly detached: DetachedModel;

  /** Every Asgard kernel of the server, as of the last poll. */
  get kernels(): readonly IKernelRow[] {
    return this._kernels;
  }

  /** True once the first poll has answered. */
  get loaded(): boolean {
    return this._loaded;
  }

  get slurmReachable(): boolean {
    return this._slurmReachable;
  }

  get slurmError(): string {
    return this._slurmError;
  }

  /** Why the last poll failed, or "". */
  get error(): string {
    return this._error;
  }

  /** The cluster's partitions, or null before they were fetched. */
  get partitions(): readonly IPartition[] | null {
    return this._partitions;
  }

  get resourcesError(): string {
    return this._resourcesError;
  }

  /** Emitted after every poll, and when the partitions were fetched. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Rows that disappeared without a shutdown through this model: their kernel ended or was shut down. */
  get vanished(): ISignal<this, IKernelRow[]> {
    return this._vanished;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Whether someone shows the partitions: they are fetched only then. */
  set resourcesWanted(wanted: boolean) {
    this._resourcesWanted = wanted;
    if (wanted) {
      void this.refresh();
    }
  }

  /** The row of a notebook's or console's kernel: by its kernel id when it has one, else by its path. */
  rowFor(kernelId: string | null | undefined, path: string | null | undefined): IKernelRow | undefined {
    if (kernelId) {
      const row = this._kernels.find(candidate => candidate.kernel_id === kernelId);
      if (row) {
        return row;
      }
    }
    if (path) {
      // A kernel still in the queue has no session yet, so JupyterLab does not know its id; nor does it
      // know the new kernel's while it changes a notebook's kernel to one that queues.
      return this._kernels.find(candidate => candidate.path === path && phaseOf(candidate.state) !== 'ended');
    }
    return undefined;
  }

  /** Poll at the starting rate for a while: a kernel may be about to show up. */
  hurry(milliseconds = 10000): void {
    const until = Date.now() + milliseconds;
    if (until > this._hurryUntil) {
      this._hurryUntil = until;
      if (this._poll.state.interval > this.times.starting) {
        void this.refresh();
      }
    }
  }

  /** Poll now (the next poll follows at the usual interval); resolves once that poll has answered. */
  async refresh(): Promise<void> {
    if (this._disposed) {
      return;
    }
    await this._poll.refresh();
    await this._poll.tick;
  }

  /** Shut a kernel down and release its allocation (DELETE /asgard/api/kernels/{id}). */
  async shutdown(kernelId: string): Promise<void> {
    this._shutDown.add(kernelId);
    try {
      await this.api.shutdown(kernelId);
    } catch (error) {
      this._shutDown.delete(kernelId);
      throw error;
    } finally {
      void this.refresh();
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    document.removeEventListener('visibilitychange', this.onVisibility);
    this._poll.dispose();
    Signal.clearData(this);
  }

  /** One tick of the Poll: rejects when the server did not answer, so that the Poll backs off. */
  private async poll(): Promise<void> {
    let answered = true;
    const wasDown = !!this._error;
    try {
      this.update(await this.api.kernels());
    } catch (error) {
      answered = false;
      this._error = error instanceof Error ? error.message : String(error);
    }
    // a server that answers again may be a new one, which took detached kernels over
    await Promise.all([this.fetchResources(), answered && this.detached.poll(this._kernels, wasDown)]);
    this._poll.frequency = { ...this._poll.frequency, interval: this.interval(answered) };
    this._changed.emit();
    if (!answered) {
      throw new Error(this._error);
    }
  }

  private update(reply: IKernelsReply): void {
    const ids = new Set(reply.kernels.map(row => row.kernel_id));
    const gone = this._kernels.filter(row => !ids.has(row.kernel_id) && !this._shutDown.has(row.kernel_id));
    for (const id of this._shutDown) {
      if (!ids.has(id)) {
        this._shutDown.delete(id);
      }
    }
    this._kernels = reply.kernels;
    this._slurmReachable = reply.slurm_reachable;
    this._slurmError = reply.slurm_error;
    this._error = '';
    this._loaded = true;
    if (gone.length) {
      this._vanished.emit(gone);
    }
  }

  private async fetchResources(): Promise<void> {
    if (!this._resourcesWanted || Date.now() - this._resourcesAt < this.times.resources) {
      return;
    }
    this._resourcesAt = Date.now();
    try {
      this._partitions = (await this.api.resources()).partitions;
      this._resourcesError = '';
    } catch (error) {
      this._resourcesError = error instanceof Error ? error.message : String(error);
    }
  }

  /** The wait before the next poll after an answer (after a failure: where the Poll's back-off starts). */
  private interval(answered: boolean): number {
    if (!answered) {
      return this.times.slow;
    }
    if (Date.now() < this._hurryUntil || this._kernels.some(starting)) {
      return this.times.starting;
    }
    const busy = this._kernels.some(row => {
      const phase = phaseOf(row.state);
      const endsSoon = phase === 'running' && row.time_left_seconds !== null && row.time_left_seconds < 60;
      return phase === 'queued' || phase === 'ending' || endsSoon || moveUnderway(row.container_move);
    });
    return busy ? this.times.fast : this.times.slow;
  }

  /** The Poll stands by while the tab is hidden; once it is shown the rows may be old: poll at once. */
  private onVisibility = (): void => {
    if (document.visibilityState === 'visible') {
      void this.refresh();
    }
  };

  private _kernels: IKernelRow[] = [];
  private _loaded = false;
  private _slurmReachable = true;
  private _slurmError = '';
  private _error = '';
  private _partitions: IPartition[] | null = null;
  private _resourcesError = '';
  private _resourcesWanted = false;
  private _resourcesAt = 0;
  private _hurryUntil = 0;
  private _shutDown = new Set<string>();
  private _disposed = false;
  private _poll: Poll<void, unknown>;
  private _changed = new Signal<this, void>(this);
  private _vanished = new Signal<this, IKernelRow[]>(this);
}
