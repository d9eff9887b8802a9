/**
 * The server extension's REST API (jupyter_asgard/server/handlers.py): its types and a thin client.
 *
 * Requests go through ServerConnection, so they carry the server's token and XSRF cookie
 * like JupyterLab's own calls.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** GPUs of a kernel's job: what Slurm granted, or what the kernel asked for while it waits. */
export interface IGpus {
  count: number;
  type: string;
}

/** One Asgard kernel of this server and where its Slurm job stands. */
export interface IKernelRow {
  kernel_id: string;
  kernel_name: string;
  display_name: string;
  /** The Jupyter server's kernel state: null until the kernel first answered. */
  execution_state: string | null;
  job_id: string;
  /** Slurm's job state (PENDING, RUNNING, TIMEOUT, ...), or SUBMITTING before Slurm knows the job. */
  state: string;
  /** Slurm's pending reason, e.g. "Resources"; empty unless PENDING. */
  reason: string;
  /** Jobs ahead of this one in its partition, or null when not queued. */
  queue_position: number | null;
  /** Slurm's expected start of a pending job ("2026-11-30T14:35:00", the cluster's time), or "". */
  expected_start: string;
  /** Seconds until then, or null where Slurm has no estimate. */
  expected_start_seconds: number | null;
  node: string;
  gpus: IGpus;
  partition: string;
  start_time: string;
  time_limit: string;
  /** Slurm's text, e.g. "1:59:40" or "UNLIMITED". */
  time_left: string;
  time_left_seconds: number | null;
  image: string;
  slurm_reachable: boolean;
  /** The notebook's path relative to the server root, also while the kernel waits in the queue. */
  path: string;
  /** The container's setup while the kernel starts, as Pyxis reports it ("creating container filesystem"), or "". */
  phase: string;
  /** Seconds in that phase so far, or null. */
  phase_seconds: number | null;
  /** Seconds since the kernel's last activity, or null where the server does not track it. */
  idle_seconds: number | null;
  /** Seconds until jupyter_server's culler shuts the kernel down (and its GPUs are released), or null. */
  cull_in_seconds: number | null;
  /** How the kernel's traffic goes: "curve", "curve-proxy", "none"; empty until it has started. */
  encryption: string;
  /** The kernel outlives the Jupyter server: the next server of its user takes it over. */
  detachable: boolean;
  /** When this server took the detachable kernel over (seconds since the epoch); null for one it started. */
  taken_over_at: number | null;
  /** The named container the kernel runs in, or "" for none. */
  container: string;
  /** Where the user's container is when the kernel runs away from it ("your container my-env ... is on gpu02"), or "". */
  container_notice: string;
  /** The node with the user's container while the kernel runs away from it (where Bring it here brings it from), or "". */
  container_home: string;
  /** "Bring it here": the copy of the container from its node to the kernel's, or null before any. */
  container_move: IContainerMove | null;
}

/** A copy of the user's container to the kernel's node (save on its node, restart from the saved image). */
export interface IContainerMove {
  state: 'saving' | 'restarting' | 'done' | 'failed';
  message: string;
  from_node: string;
}

/** One of the user's named containers on one node, as the server last saw it there (container_places.py). */
export interface IContainerPlace {
  name: string;
  node: string;
  /** The image it was made from, as the kernel named it. */
  image: string;
  /** --container-writable (true), --container-readonly (false), or Pyxis's default (null). */
  writable: boolean | null;
  partition: string;
  /** When the server saw Pyxis make its filesystem (ISO 8601), or "". */
  created: string;
  /** The last start of a kernel in it (ISO 8601), or "". */
  last_use: string;
}

/** A named container of the user: its nodes newest first, what its newest place says, and its kernels. */
export interface IContainer {
  name: string;
  nodes: string[];
  image: string;
  writable: boolean | null;
  last_use: string;
  places: IContainerPlace[];
  /** This server's kernels that run in it now, and on which node. */
  kernels: { kernel_id: string; node: string }[];
}

/** GET /asgard/api/containers. */
export interface IContainersReply {
  containers: IContainer[];
}

/** What a detachable kernel printed while no Jupyter server held it, one IOPub output each (keeper.py). */
export interface IWhileDetachedEntry {
  kind: 'stream' | 'error' | 'result';
  /** The stream's name ("stdout", "stderr"), for kind "stream". */
  name?: string;
  /** The text, or for an error "NameError: name 'y' is not defined" (no traceback). */
  text: string;
  /** When it came, in seconds since the epoch. */
  time: number;
  /** The msg_id of the execute request it answers (the cell that ran), where it answers one. */
  cell?: string;
}

/**
 * An execute request sent through an earlier Jupyter server that ended after that server let go of the kernel:
 * its reply went to that server's connection, which is gone.
 */
export interface IUnanswered {
  /** The request's msg_id. */
  cell: string;
  /** Its execution count, or null where the kernel did not say. */
  count: number | null;
  status: 'ok' | 'error';
  /** When it ended, in seconds since the epoch. */
  time: number;
  /** When it was sent (its header's date). */
  sent: string;
  /** What it printed, oldest first, as the record on the node holds it. */
  outputs: IWhileDetachedEntry[];
  /** Whether that is all it printed (the record drops its oldest entries past 64 KiB). */
  complete: boolean;
}

/** GET /asgard/api/kernels/{id}: the kernel's row, and what it printed while detached (after a take-over). */
export interface IKernelDetail extends IKernelRow {
  while_detached: IWhileDetachedEntry[];
  /** The requests sent through the earlier server that have ended (a tab that sent one still waits for it). */
  unanswered?: IUnanswered[];
}

/** A detachable kernel of this user that this server found and did not take over (held elsewhere, ...). */
export interface IFoundKernel {
  kernel_id: string;
  kernel_name: string;
  job_id: string;
  node: string;
  /** Its notebook's path, as its last server knew it, or "". */
  path: string;
  /** The host of the Jupyter server that holds it, or "". */
  held_by: string;
  /** Under JupyterHub, the user's server it belongs to ("" the default one); null outside a hub. */
  hub_server: string | null;
  /** Why this server did not take it over, in the server's words. */
  why: string;
}

/** A detachable kernel that ended while no server held it (reported once by the server that found it). */
export interface IEndedKernel {
  kernel_id: string;
  kernel_name: string;
  job_id: string;
  path: string;
  why: string;
}

/** GET /asgard/api/detached. */
export interface IDetachedReply {
  found: IFoundKernel[];
  ended: IEndedKernel[];
  /** The server's process: a new one has new lists (and may have taken kernels over). */
  server_pid: number;
}

export interface IKernelsReply {
  kernels: IKernelRow[];
  slurm_reachable: boolean;
  slurm_error: string;
}

export interface IPartition {
  name: string;
  default: boolean;
  available: string;
  time_limit: string;
  nodes: { name: string; state: string }[];
  gpus: { [type: string]: { total: number; free: number } };
  cpus: { total: number; idle: number };
  max_memory_mb: number | null;
}

export interface IResourcesReply {
  partitions: IPartition[];
}

const API = 'asgard/api';

/** A terminal in a kernel's container (POST /asgard/api/kernels/{id}/terminal). */
export interface ITerminalReply {
  name: string;
  node: string;
  kernel_id: string;
  title: string;
}

/** A save of a kernel's container as an image (/asgard/api/kernels/{id}/save-image). */
export interface IImageSave {
  kernel_id: string;
  name: string;
  path: string;
  state: 'saving' | 'saved' | 'failed';
  message: string;
  started: string;
  finished: string;
  packages: number;
}

/** Where a running import stands (the importer's progress as enroot reports it; image_imports.py). */
export interface IImportProgress {
  /** What enroot does now ("downloading", "extracting", "squashfs", ...), or "" before it reported anything. */
  phase: string;
  /** Layers fetched so far, of layers_total (0 while unknown). */
  layers_done: number;
  layers_total: number;
  /** mksquashfs's percentage while phase is "squashfs", else null. */
  percent: number | null;
  /** The registry's manifest digest of the image, once looked up. */
  digest: string;
}

/** An import of a registry image into the user's image directory (/asgard/api/images/import). */
export interface IImageImport {
  id: string;
  /** The enroot URI imported, e.g. "docker://nvcr.io#nvidia/pytorch:24.05-py3". */
  uri: string;
  name: string;
  /** Where the image is written: NAME.sqsh in the user's image directory. */
  path: string;
  state: 'queued' | 'importing' | 'imported' | 'failed' | 'cancelled';
  /** One line on where it stands or how it ended, in the server's words. */
  status: string;
  progress: IImportProgress;
  /** Why it failed, and how to fix that where the server knows ("" otherwise). */
  message: string;
  hint: string;
  job_id: string;
  /** The image's size in bytes, once imported. */
  size: number;
  started: string;
  finished: string;
}

/** GET /asgard/api/images/import: this server's imports, running and ended. */
export interface IImageImportsReply {
  imports: IImageImport[];
}

/** Calls to /asgard/api with the settings of the Jupyter server JupyterLab talks to. */
export class AsgardAPI {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  kernels(): Promise<IKernelsReply> {
    return this.request<IKernelsReply>('kernels');
  }

  resources(): Promise<IResourcesReply> {
    return this.request<IResourcesReply>('resources');
  }

  /** A kernel's row with what it printed while detached. */
  kernel(kernelId: string): Promise<IKernelDetail> {
    return this.request<IKernelDetail>(`kernels/${encodeURIComponent(kernelId)}`);
  }

  /** Detached kernels this server found and did not take over, and those that ended while detached. */
  detached(): Promise<IDetachedReply> {
    return this.request<IDetachedReply>('detached');
  }

  /** Take a detached kernel over (Adopt): it becomes one of this server's kernels, under its own id. */
  async adopt(kernelId: string): Promise<void> {
    await this.request<unknown>(`detached/${encodeURIComponent(kernelId)}`, { method: 'POST' });
  }

  /** End a detached kernel (Release): its job is cancelled, and what it held in memory is lost. */
  async release(kernelId: string): Promise<void> {
    await this.request<void>(`detached/${encodeURIComponent(kernelId)}`, { method: 'DELETE' });
  }

  /** Shut the kernel down and release its Slurm allocation, also while it waits in the queue. */
  async shutdown(kernelId: string): Promise<void> {
    await this.request<void>(`kernels/${encodeURIComponent(kernelId)}`, { method: 'DELETE' });
  }

  /** A new jupyter_server terminal whose shell runs in the kernel's container, on its node. */
  openTerminal(kernelId: string): Promise<ITerminalReply> {
    return this.request<ITerminalReply>(`kernels/${encodeURIComponent(kernelId)}/terminal`, { method: 'POST' });
  }

  /** Start saving the kernel's container as NAME.sqsh in the user's image directory. */
  saveImage(kernelId: string, name: string): Promise<IImageSave> {
    return this.request<IImageSave>(`kernels/${encodeURIComponent(kernelId)}/save-image`, {
      method: 'POST',
      body: JSON.stringify({ name })
    });
  }

  /** How the kernel's latest save goes. */
  imageSave(kernelId: string): Promise<IImageSave> {
    return this.request<IImageSave>(`kernels/${encodeURIComponent(kernelId)}/save-image`);
  }

  /** Start importing a registry image as NAME.sqsh (a name is made from the URI where none is given); an
   * import of the same URI that runs already is answered instead. */
  importImage(uri: string, name = ''): Promise<IImageImport> {
    return this.request<IImageImport>('images/import', {
      method: 'POST',
      body: JSON.stringify(name ? { uri, name } : { uri })
    });
  }

  /** This server's image imports, running and ended. */
  imageImports(): Promise<IImageImportsReply> {
    return this.request<IImageImportsReply>('images/import');
  }

  /** Cancel a running import: its Slurm job ends and its files go; answers the import, cancelled. */
  cancelImport(importId: string): Promise<IImageImport> {
    return this.request<IImageImport>(`images/import/${encodeURIComponent(importId)}`, { method: 'DELETE' });
  }

  /** The user's named containers and the nodes that hold them. */
  containers(): Promise<IContainersReply> {
    return this.request<IContainersReply>('containers');
  }

  /** Delete a named container from a node's storage (from every node that holds it where node is ""). */
  async removeContainer(name: string, node = ''): Promise<void> {
    await this.request<unknown>(`containers/${encodeURIComponent(name)}`, { method: 'DELETE' }, node ? { node } : {});
  }

  /** "Bring it here": save the kernel's container on its node, then restart the kernel in a copy of it. */
  async bringContainer(kernelId: string): Promise<IContainerMove> {
    const reply = await this.request<{ container_move: IContainerMove }>(
      `kernels/${encodeURIComponent(kernelId)}/container/bring`,
      { method: 'POST' }
    );
    return reply.container_move;
  }

  private async request<T>(path: string, init: RequestInit = {}, query: { [key: string]: string } = {}): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, API, path) + URLExt.objectToQueryString(query);
    const response = await ServerConnection.makeRequest(url, init, this.settings);
    const text = await response.text();
    let body: unknown = undefined;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    }
    if (!response.ok) {
      throw new AsgardAPIError(response.status, messageOf(body) || response.statusText, hintOf(body));
    }
    return body as T;
  }
}

/** A refusal of the API, in the server's words (handlers.py answers {"message": ..., "hint"?: ...}). */
export class AsgardAPIError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** How to fix it, where the server knows: "" otherwise. */
    readonly hint = ''
  ) {
    super(message);
    this.name = 'AsgardAPIError';
  }
}

/** A refusal in the server's words: its message, and how to fix it where it knows ("" otherwise). */
export interface IProblem {
  message: string;
  hint: string;
}

/** The server's words of a failed request (an AsgardAPIError carries "hint" too), or the error's own. */
export function problemOf(error: unknown): IProblem {
  if (error instanceof Error) {
    const hint = 'hint' in error && typeof error.hint === 'string' ? error.hint : '';
    return { message: error.message, hint };
  }
  return { message: String(error), hint: '' };
}

function messageOf(body: unknown): string {
  if (typeof body === 'object' && body !== null && 'message' in body) {
    return String(body.message);
  }
  // A page (a 404 from a server without this API, a proxy's error page) is no message: its status says more.
  return typeof body === 'string' && !body.trimStart().startsWith('<') ? body.slice(0, 200) : '';
}

function hintOf(body: unknown): string {
  return typeof body === 'object' && body !== null && 'hint' in body && typeof body.hint === 'string' ? body.hint : '';
}
