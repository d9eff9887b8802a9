/**
 * One of the API's listings with a Poll of its own (Lumino's Poll does the scheduling, the standby and the
 * back-off): asked every `interval` ms while wanted (a running import, a panel that shows the listing), once
 * when asked to refresh, never while the tab is hidden, backing off while the server does not answer. The
 * image imports' and the containers' models are such listings.
 */
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { IProblem, problemOf } from './api';

/** How often a listing is asked. */
export interface IListingTimes {
  /** Between two listings while wanted, in ms. */
  interval: number;
  /** The longest back-off while the server does not answer, in ms. */
  max: number;
}

export abstract class PolledListing implements IDisposable {
  /** name: the Poll's (jupyter-asgard:...). */
  constructor(name: string, times: IListingTimes) {
    this._poll = new Poll({
      factory: () => this.tick(),
      frequency: { interval: times.interval, backoff: 2, max: times.max },
      linger: 0,
      name,
      standby: () => (this._asked || this.listingWanted() ? 'when-hidden' : true)
    });
  }

  /** Why the last listing failed, in the server's words, or null. */
  get error(): IProblem | null {
    return this._error;
  }

  /** Emitted after every listing, and when the listing changed by what the user did. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** List now, wanted or not; resolves once the listing has answered (or the tab is hidden). */
  async refresh(): Promise<void> {
    if (this.isDisposed) {
      return;
    }
    this._asked = true;
    await this._poll.refresh();
    await this._poll.tick;
  }

  dispose(): void {
    if (!this.isDisposed) {
      this._poll.dispose();
      Signal.clearData(this);
    }
  }

  /** Whether the listing is wanted now: the Poll stands by otherwise. */
  protected abstract listingWanted(): boolean;

  /** Ask the server for the listing and take its answer in; rejects when the server did not answer. */
  protected abstract list(): Promise<void>;

  /** One tick of the Poll: rejects when the server did not answer, so that the Poll backs off. */
  private async tick(): Promise<void> {
    this._asked = false;
    try {
      await this.list();
      this._error = null;
    } catch (error) {
      this._error = problemOf(error);
      throw error;
    } finally {
      this._changed.emit();
    }
  }

  /** A listing was asked for (refresh): the next tick lists even when it is not wanted. */
  private _asked = false;
  private _error: IProblem | null = null;
  private readonly _poll: Poll<void, unknown>;
  protected readonly _changed = new Signal<this, void>(this);
}
