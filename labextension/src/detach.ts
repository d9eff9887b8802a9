/**
 * Detachable kernels in words, and the small decisions about them: what a kernel printed while detached, as
 * much of it as a card has room for; which kernels' details to fetch; which ended kernels the user dismissed.
 * Pure functions of the API's answers: no DOM, no JupyterLab (the side panel renders them).
 */
import type { IEndedKernel, IFoundKernel, IKernelRow, IWhileDetachedEntry } from './api';
import { notebookName, phaseOf } from './format';
import { IKeyValueStore, StoredKeys } from './sentalerts';

/** The tooltip of a card's "detachable" tag. */
export const DETACHABLE_TOOLTIP =
  'Detachable: this kernel keeps running when this Jupyter server stops (its variables too); ' +
  'your next Jupyter server takes it over.';

/** The most characters of output a card shows of what a kernel printed while detached (the newest). */
export const MAX_SHOWN_CHARS = 2000;

/** Before an error's text on a card (which colours it too), so that it reads as one without colours. */
export const ERROR_MARK = '✗ ';

/** One run of output on a card: consecutive text of one stream, one result, or one error. */
export interface IOutputPart {
  kind: IWhileDetachedEntry['kind'];
  text: string;
}

export interface IShownOutput {
  parts: IOutputPart[];
  /** Characters of older output left out to stay within the bound (0 when all is shown). */
  omitted: number;
}

/**
 * What a kernel printed while detached, as a card shows it: streams joined, terminal escapes dropped and
 * progress bars at their last state (what a terminal would show), each result and error on lines of its own,
 * errors marked, and only the newest `max` characters, older ones counted in `omitted`.
 */
export function shownOutput(entries: readonly IWhileDetachedEntry[], max = MAX_SHOWN_CHARS): IShownOutput {
  const parts: IOutputPart[] = [];
  let stream = '';
  for (const entry of entries) {
    const last = parts[parts.length - 1];
    const name = entry.name ?? 'stdout';
    if (entry.kind === 'stream' && last?.kind === 'stream' && stream === name) {
      last.text += entry.text;
      continue;
    }
    stream = entry.kind === 'stream' ? name : '';
    parts.push({ kind: entry.kind, text: entry.text });
  }
  for (const part of parts) {
    part.text = terminalText(part.text);
    if (part.kind === 'error') {
      part.text = `${ERROR_MARK}${part.text}`;
    }
    if (part.kind !== 'stream' && !part.text.endsWith('\n')) {
      part.text += '\n';
    }
  }
  const shown = parts.filter(part => part.text);
  return bounded(shown, max);
}

/** The newest max characters of parts: the oldest parts dropped, the oldest one kept cut to its end. */
function bounded(parts: IOutputPart[], max: number): IShownOutput {
  const total = parts.reduce((sum, part) => sum + part.text.length, 0);
  let room = Math.max(0, max);
  const kept: IOutputPart[] = [];
  for (let index = parts.length - 1; index >= 0 && room > 0; index--) {
    const part = parts[index];
    const text = part.text.length <= room ? part.text : part.text.slice(part.text.length - room);
    kept.unshift({ kind: part.kind, text });
    room -= text.length;
  }
  return { parts: kept, omitted: total - (Math.max(0, max) - room) };
}

/** Text as a terminal shows it: ANSI escapes (colours, cursor moves) dropped, each line after its last \r. */
export function terminalText(text: string): string {
  // eslint-disable-next-line no-control-regex
  const plain = text.replace(/\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-_]/g, '');
  return plain
    .split('\n')
    .map(line => {
      const trimmed = line.replace(/\r+$/, '');
      return trimmed.slice(trimmed.lastIndexOf('\r') + 1);
    })
    .join('\n');
}

/** "14:05", the local clock time of an epoch second. */
export function clock(epochSeconds: number): string {
  const at = new Date(epochSeconds * 1000);
  return `${String(at.getHours()).padStart(2, '0')}:${String(at.getMinutes()).padStart(2, '0')}`;
}

/** The tooltip of "While detached:": how many outputs, from when to when. */
export function whileDetachedTitle(entries: readonly IWhileDetachedEntry[]): string {
  if (!entries.length) {
    return '';
  }
  const from = clock(entries[0].time);
  const to = clock(entries[entries.length - 1].time);
  const count = entries.length === 1 ? '1 output' : `${entries.length} outputs`;
  const span = from === to ? `at ${from}` : `from ${from} to ${to}`;
  return `What the kernel printed while no Jupyter server held it: ${count}, ${span}`;
}

/** "The omitted 1234 characters" note above a bounded output, or "" when nothing was left out. */
export function omittedWords(omitted: number): string {
  return omitted > 0 ? `… ${omitted} earlier characters not shown` : '';
}

/** A detached kernel's name: its notebook's, else its kernelspec's, else the start of its id. */
export function detachedName(kernel: Pick<IFoundKernel, 'kernel_id' | 'path'> & { kernel_name?: string }): string {
  return notebookName(kernel.path) || kernel.kernel_name || `kernel ${kernel.kernel_id.slice(0, 8)}`;
}

/** "Slurm job 42 on gpu01, asgard-detachable": where a found kernel runs. */
export function foundDetails(kernel: IFoundKernel): string {
  const job = kernel.job_id ? `Slurm job ${kernel.job_id}${kernel.node ? ` on ${kernel.node}` : ''}` : '';
  const spec = notebookName(kernel.path) && kernel.kernel_name ? kernel.kernel_name : '';
  return [job, spec].filter(part => part).join(', ');
}

/** A found kernel's tooltip: its notebook, the server holding it, and the JupyterHub server it belongs to. */
export function foundTooltip(kernel: IFoundKernel): string {
  const hubServer =
    kernel.hub_server === null || kernel.hub_server === undefined
      ? ''
      : `started in ${kernel.hub_server ? `your JupyterHub server '${kernel.hub_server}'` : 'your default JupyterHub server'}`;
  const holder = kernel.held_by ? `held by a Jupyter server on ${kernel.held_by}` : '';
  return [kernel.path, holder, hubServer].filter(part => part).join('\n');
}

/** "ended while detached: it was released": an ended kernel's line. */
export function endedLine(kernel: IEndedKernel): string {
  return `ended while detached: ${kernel.why}`;
}

/** What Release does, asked before it does it. */
export function releaseQuestion(kernel: IFoundKernel): string {
  const job = kernel.job_id ? `Slurm job ${kernel.job_id}` : 'its Slurm job';
  return (
    `The detached kernel of ${detachedName(kernel)} ends, with everything in its memory (variables, ` +
    `a cell still running), and ${job} is cancelled. This cannot be undone.`
  );
}

/** When a kernel's details were last fetched: for which server process, and whether they came. */
export interface IDetailFetch {
  serverPid: number;
  at: number;
  ok: boolean;
}

/**
 * The detachable kernels whose details (what they printed while detached) are due: those not fetched yet,
 * those fetched from another server process (a new server may have taken them over since), and failed
 * fetches once retryMs have passed. Ended kernels have nothing new to say.
 */
export function detailsDue(
  rows: readonly IKernelRow[],
  fetched: ReadonlyMap<string, IDetailFetch>,
  serverPid: number,
  now: number,
  retryMs: number
): string[] {
  return rows
    .filter(row => row.detachable && phaseOf(row.state) !== 'ended')
    .filter(row => {
      const last = fetched.get(row.kernel_id);
      return !last || last.serverPid !== serverPid || (!last.ok && now - last.at >= retryMs);
    })
    .map(row => row.kernel_id);
}

const DISMISSED = 'jupyter-asgard:dismissed-ended';

/**
 * The ended kernels the user dismissed: by server process and kernel id (a server reports each ended kernel
 * once, for as long as it runs), kept in the browser's storage so that a reload or another tab does not show
 * them again. Keys of other server processes are dropped: those servers are gone.
 */
export class DismissedKernels {
  constructor(store: IKeyValueStore | null) {
    this.keys = new StoredKeys(store, DISMISSED);
  }

  has(serverPid: number, kernelId: string): boolean {
    return this.keys.has(`${serverPid}:${kernelId}`);
  }

  add(serverPid: number, kernelId: string): void {
    this.keys.add(`${serverPid}:${kernelId}`, known => known.startsWith(`${serverPid}:`));
  }

  private readonly keys: StoredKeys;
}
