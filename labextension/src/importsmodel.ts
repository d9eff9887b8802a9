/**
 * This server's image imports as the front end knows them, with a Poll of their own: an import takes minutes,
 * and nothing else the panel shows changes with it, so the kernels' poll (model.ts) is not slowed or sped up by
 * it. The Poll asks every second while an import runs and stands by otherwise (and while the tab is hidden);
 * the listing is asked once more when the panel is shown or refreshed, and after the user starts or cancels
 * one, so that an import started elsewhere (`jupyter asgard import`, another tab) shows up then.
 */
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { AsgardAPI, IImageImport, IProblem, problemOf } from './api';
import { isRunning, justEnded, withImport } from './imports';

export interface IImportsPollTimes {
  /** Between two listings while an import runs, in ms. */
  running: number;
  /** The longest back-off while the server does not answer, in ms. */
  max: number;
}

export const IMPORTS_POLL_TIMES: IImportsPollTimes = { running: 1000, max: 30000 };

export class ImportsModel implements IDisposable {
  constructor(
    readonly api: AsgardAPI,
    times: IImportsPollTimes = IMPORTS_POLL_TIMES
  ) {
    this._poll = new Poll({
      factory: () => this.list(),
      frequency: { interval: times.running, backoff: 2, max: times.max },
      linger: 0,
      name: 'jupyter-asgard:imports',
      standby: () => (this._asked || this._imports.some(isRunning) ? 'when-hidden' : true)
    });
  }

  /** This server's imports, running and ended, as of the last listing. */
  get imports(): readonly IImageImport[] {
    return this._imports;
  }

  /** Why the last listing failed, in the server's words, or null. */
  get error(): IProblem | null {
    return this._error;
  }

  /** Emitted after every listing, and when the user started or cancelled an import. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Imports that ended since the listing before (imported, failed or cancelled), once each. */
  get ended(): ISignal<this, IImageImport[]> {
    return this._ended;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** List the imports now, running or not; resolves once the listing has answered (or the tab is hidden). */
  async refresh(): Promise<void> {
    if (this.isDisposed) {
      return;
    }
    this._asked = true;
    await this._poll.refresh();
    await this._poll.tick;
  }

  /** Start importing uri (as name, or a name made from it); rejects with the server's refusal. */
  async start(uri: string, name: string): Promise<IImageImport> {
    const found = await this.api.importImage(uri, name);
    this.show(withImport(this._imports, found));
    void this.refresh(); // the Poll wakes up: an import runs
    return found;
  }

  /** Cancel a running import; rejects with the server's refusal (409: it has ended meanwhile). */
  async cancel(importId: string): Promise<void> {
    try {
      this.show(withImport(this._imports, await this.api.cancelImport(importId)));
    } finally {
      void this.refresh();
    }
  }

  dispose(): void {
    if (!this.isDisposed) {
      this._poll.dispose();
      Signal.clearData(this);
    }
  }

  /** One tick of the Poll: rejects when the server did not answer, so that the Poll backs off. */
  private async list(): Promise<void> {
    this._asked = false;
    try {
      const reply = await this.api.imageImports();
      this._error = null;
      this.show(reply.imports);
    } catch (error) {
      this._error = problemOf(error);
      this._changed.emit();
      throw error;
    }
  }

  private show(imports: IImageImport[]): void {
    const ended = justEnded(this._imports, imports);
    this._imports = imports;
    this._changed.emit();
    if (ended.length) {
      this._ended.emit(ended);
    }
  }

  private _imports: IImageImport[] = [];
  private _error: IProblem | null = null;
  /** A listing was asked for (refresh): the next tick lists even with no import running. */
  private _asked = false;
  private readonly _poll: Poll<void, unknown>;
  private readonly _changed = new Signal<this, void>(this);
  private readonly _ended = new Signal<this, IImageImport[]>(this);
}
