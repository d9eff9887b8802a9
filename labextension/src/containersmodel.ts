/**
 * The user's named containers as the front end knows them, a listing with a Poll of its own (listing.ts): it
 * changes when a kernel starts in a container on a node or one is removed, so it is asked only while the side
 * panel shows it, every 10 s, and at once when the panel is shown or refreshed, when its kernels change, and
 * after a removal.
 */
import { AsgardAPI, IContainer } from './api';
import { IListingTimes, PolledListing } from './listing';

/** While the panel is shown: every 10 s, backing off up to a minute. */
export const CONTAINERS_POLL_TIMES: IListingTimes = { interval: 10000, max: 60000 };

export class ContainersModel extends PolledListing {
  constructor(
    readonly api: AsgardAPI,
    times: IListingTimes = CONTAINERS_POLL_TIMES
  ) {
    super('jupyter-asgard:containers', times);
  }

  /** The user's containers as of the last listing (null before the first). */
  get containers(): readonly IContainer[] | null {
    return this._containers;
  }

  /** Whether someone shows the containers: they are listed regularly only then (and at once when they are). */
  set wanted(wanted: boolean) {
    this._wanted = wanted;
    if (wanted) {
      void this.refresh();
    }
  }

  /** Delete a container from a node's storage; rejects with the server's refusal (a kernel runs in it, ...). */
  async remove(name: string, node: string): Promise<void> {
    try {
      await this.api.removeContainer(name, node);
    } finally {
      await this.refresh();
    }
  }

  protected listingWanted(): boolean {
    return this._wanted;
  }

  protected async list(): Promise<void> {
    this._containers = (await this.api.containers()).containers;
  }

  private _containers: IContainer[] | null = null;
  private _wanted = false;
}
