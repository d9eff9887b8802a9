/**
 * This server's image imports as the front end knows them, a listing with a Poll of its own (listing.ts): an import takes minutes,
 * and nothing else the panel shows changes with it, so the kernels' poll (model.ts) is not slowed or sped up by
 * it. The Poll asks every second while an import runs and stands by otherwise (and while the tab is hidden);
 * the listing is asked once more when the panel is shown or refreshed, and after the user starts or cancels
 * one, so that an import started elsewhere (`jupyter asgard import`, another tab) shows up then.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { AsgardAPI, IImageImport } from './api';
import { isRunning, justEnded, withImport } from './imports';
import { IListingTimes, PolledListing } from './listing';

export interface IImportsPollTimes {
  /** Between two listings while an import runs, in ms. */
  running: number;
  /** The longest back-off while the server does not answer, in ms. */
  max: number;
}

export const IMPORTS_POLL_TIMES: IImportsPollTimes = { running: 1000, max: 30000 };

export class ImportsModel extends PolledListing {
  constructor(
    readonly api: AsgardAPI,
    times: IImportsPollTimes = IMPORTS_POLL_TIMES
  ) {
    const listing: IListingTimes = { interval: times.running, max: times.max };
    super('jupyter-asgard:imports', listing);
  }

  /** This server's imports, running and ended, as of the last listing. */
  get imports(): readonly IImageImport[] {
    return this._imports;
  }

  /** Imports that ended since the listing before (imported, failed or cancelled), once each. */
  get ended(): ISignal<this, IImageImport[]> {
    return this._ended;
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

  /** The Poll asks while an import runs (and stands by otherwise). */
  protected listingWanted(): boolean {
    return this._imports.some(isRunning);
  }

  protected async list(): Promise<void> {
    this.take((await this.api.imageImports()).imports);
  }

  /** The imports as the user's start or cancel left them, shown at once. */
  private show(imports: IImageImport[]): void {
    this.take(imports);
    this._changed.emit();
  }

  private take(imports: IImageImport[]): void {
    const ended = justEnded(this._imports, imports);
    this._imports = imports;
    if (ended.length) {
      this._ended.emit(ended);
    }
  }

  private _imports: IImageImport[] = [];
  private readonly _ended = new Signal<this, IImageImport[]>(this);
}
