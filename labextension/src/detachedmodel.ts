/**
 * Detachable kernels as the front end knows them: those the server found and did not take over, those that
 * ended while detached, and what each of the server's detachable kernels printed while detached.
 *
 * It has no poller of its own: the model's Poll (model.ts) calls poll() after each answer about the kernels.
 * The listing changes only when a server starts or someone adopts or releases a kernel, so it is asked at most
 * every `every` ms, and at once when the server answers again after it did not (a new server may have taken
 * kernels over). A kernel's details are fetched when it appears and again under each new server process.
 */
import { AsgardAPI, IEndedKernel, IFoundKernel, IKernelRow, IProblem, IWhileDetachedEntry, problemOf } from './api';
import { detailsDue, DismissedKernels, IDetailFetch } from './detach';
import type { IKeyValueStore } from './sentalerts';

export interface IDetachedModelOptions {
  /** The least time between two listings, and between a failed detail fetch and the next try, in ms. */
  every: number;
  /** Where dismissed ended kernels are remembered (the browser's localStorage), or null. */
  store: IKeyValueStore | null;
  /** Poll the kernels now (after an adoption or a release, which change them). */
  refresh: () => Promise<void>;
}

export class DetachedModel {
  constructor(
    private readonly api: AsgardAPI,
    private readonly options: IDetachedModelOptions
  ) {
    this.dismissed = new DismissedKernels(options.store);
  }

  /** Kernels this server found and did not take over. */
  get found(): readonly IFoundKernel[] {
    return this._found;
  }

  /** Kernels that ended while detached, less those the user dismissed. */
  get ended(): readonly IEndedKernel[] {
    return this._ended.filter(kernel => !this.dismissed.has(this._serverPid, kernel.kernel_id));
  }

  /** Why the last listing failed, in the server's words, or null. */
  get error(): IProblem | null {
    return this._error;
  }

  /** What a kernel of this server printed while detached (after a take-over), oldest first. */
  whileDetached(kernelId: string): readonly IWhileDetachedEntry[] {
    return this._output.get(kernelId) ?? NONE;
  }

  /** After an answer about the kernels: the listing where due (or forced), then the details due. */
  async poll(rows: readonly IKernelRow[], force: boolean): Promise<void> {
    if (force || Date.now() - this._listedAt >= this.options.every) {
      await this.list();
    }
    const due = detailsDue(rows, this._fetched, this._serverPid, Date.now(), this.options.every);
    await Promise.all(due.map(kernelId => this.fetchDetail(kernelId)));
    const ids = new Set(rows.map(row => row.kernel_id));
    for (const kernelId of [...this._fetched.keys()]) {
      if (!ids.has(kernelId)) {
        this._fetched.delete(kernelId);
        this._output.delete(kernelId);
      }
    }
  }

  /** Take a found kernel over; rejects with the server's refusal (a 409 says why it cannot). */
  async adopt(kernelId: string): Promise<void> {
    try {
      await this.api.adopt(kernelId);
    } finally {
      await this.changedOnServer();
    }
  }

  /** End a found kernel and cancel its job; rejects with the server's refusal. */
  async release(kernelId: string): Promise<void> {
    try {
      await this.api.release(kernelId);
    } finally {
      await this.changedOnServer();
    }
  }

  /** Hide an ended kernel for good (for as long as this server process reports it). */
  dismiss(kernelId: string): void {
    this.dismissed.add(this._serverPid, kernelId);
  }

  /** After an adoption or release, whether it was done or refused: the listing and the kernels anew. */
  private async changedOnServer(): Promise<void> {
    this._listedAt = 0;
    await this.options.refresh();
  }

  private async list(): Promise<void> {
    this._listedAt = Date.now();
    try {
      const reply = await this.api.detached();
      this._found = reply.found;
      this._ended = reply.ended;
      this._serverPid = reply.server_pid;
      this._error = null;
    } catch (error) {
      this._error = problemOf(error);
    }
  }

  private async fetchDetail(kernelId: string): Promise<void> {
    const serverPid = this._serverPid;
    let ok = true;
    try {
      this._output.set(kernelId, (await this.api.kernel(kernelId)).while_detached ?? NONE);
    } catch {
      ok = false; // tried again later; what was fetched before stays shown
    }
    this._fetched.set(kernelId, { serverPid, at: Date.now(), ok });
  }

  private readonly dismissed: DismissedKernels;
  private _found: IFoundKernel[] = [];
  private _ended: IEndedKernel[] = [];
  private _serverPid = 0;
  private _error: IProblem | null = null;
  private _listedAt = 0;
  private readonly _fetched = new Map<string, IDetailFetch>();
  private readonly _output = new Map<string, readonly IWhileDetachedEntry[]>();
}

const NONE: readonly IWhileDetachedEntry[] = [];
