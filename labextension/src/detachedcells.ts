/**
 * Cells whose reply went to a Jupyter server that has gone, finished in the tab that ran them.
 *
 * A kernel answers a cell through the server connection the cell was sent on. When the server that held a
 * detachable kernel goes, the replies to the cells sent through it reach nobody: those that end while the
 * kernel is detached, and those still running when the next server takes it over (its connection to the
 * kernel is a new one). The tab that sent them waits for good, the cell showing [*] though it ended, and it
 * missed what the cell printed while its server was down. After a take-over the server lists the requests sent
 * through the earlier server that have ended (`unanswered`, read anew at each ask), each with what it printed
 * as the record on the node holds it; each such cell of an open notebook gets its outputs put right, its
 * execution count, and its wait ended.
 */
import type { AsgardAPI, IKernelRow, IUnanswered, IWhileDetachedEntry } from './api';

/** An output as a notebook keeps it (nbformat), of the kinds a detached kernel's record holds: text only. */
export type CellOutput =
  | { output_type: 'stream'; name: string; text: string }
  | { output_type: 'error'; ename: string; evalue: string; traceback: string[] }
  | {
      output_type: 'execute_result';
      execution_count: number | null;
      data: { 'text/plain': string };
      metadata: Record<string, never>;
    };

/** How a cell's outputs are put right: outputs replaced at their index, then outputs added at its end. */
export interface IRestored {
  set: [number, CellOutput][];
  add: CellOutput[];
}

/**
 * How to put right the outputs of a cell that shows `shown`, from what its request printed (`entries`, oldest
 * first; `complete` when that is all it printed). The tab got a start of it before its server went and, if it
 * reconnected before the cell ended, an end of it: with the whole record, a stream the cell shows as one output
 * (JupyterLab joins a stream's consecutive text), or not at all, gets the record's whole text of that stream.
 * Otherwise the missing outputs are added (missingOutputs).
 */
export function restoredOutputs(
  shown: readonly CellOutput[],
  entries: readonly IWhileDetachedEntry[],
  count: number | null,
  complete: boolean
): IRestored {
  if (!complete) {
    return { set: [], add: missingOutputs(shown, entries, count) };
  }
  const recorded = entries.map(entry => asOutput(entry, count));
  const restored: IRestored = { set: [], add: [] };
  for (const name of streamNames(recorded)) {
    const at = shown.flatMap((output, index) =>
      output.output_type === 'stream' && output.name === name ? [index] : []
    );
    const whole: CellOutput = { output_type: 'stream', name, text: streamText(recorded, name) };
    if (at.length === 1) {
      restored.set.push([at[0], whole]);
    } else if (!at.length) {
      restored.add.push(whole);
    } else {
      const own = entries.filter(entry => entry.kind === 'stream' && (entry.name ?? 'stdout') === name);
      restored.add.push(...missingOutputs(shown, own, count));
    }
  }
  const others = recorded.filter(output => output.output_type !== 'stream');
  restored.add.push(...others.filter(output => !shown.some(other => sameOutput(other, output))));
  return restored;
}

/**
 * The outputs a cell that shows `shown` is missing, from what its request printed (oldest first), where the
 * record may not hold all of it: each stream's recorded text is cut by the longest start of it that the
 * cell's text of that stream already ends with, and a result or error the cell shows is not added again.
 */
export function missingOutputs(
  shown: readonly CellOutput[],
  entries: readonly IWhileDetachedEntry[],
  count: number | null
): CellOutput[] {
  const recorded = entries.map(entry => asOutput(entry, count));
  const skip = new Map<string, number>();
  for (const name of streamNames(recorded)) {
    skip.set(name, overlap(streamText(shown, name), streamText(recorded, name)));
  }
  const missing: CellOutput[] = [];
  for (const output of recorded) {
    if (output.output_type !== 'stream') {
      if (!shown.some(other => sameOutput(other, output))) {
        missing.push(output);
      }
      continue;
    }
    const cut = Math.min(skip.get(output.name) ?? 0, output.text.length);
    skip.set(output.name, (skip.get(output.name) ?? 0) - cut);
    if (cut < output.text.length) {
      missing.push({ ...output, text: output.text.slice(cut) });
    }
  }
  return missing;
}

function asOutput(entry: IWhileDetachedEntry, count: number | null): CellOutput {
  if (entry.kind === 'stream') {
    return { output_type: 'stream', name: entry.name ?? 'stdout', text: entry.text };
  }
  if (entry.kind === 'error') {
    const colon = entry.text.indexOf(': ');
    const [ename, evalue] = colon < 0 ? [entry.text, ''] : [entry.text.slice(0, colon), entry.text.slice(colon + 2)];
    return { output_type: 'error', ename, evalue, traceback: [entry.text] };
  }
  return { output_type: 'execute_result', execution_count: count, data: { 'text/plain': entry.text }, metadata: {} };
}

function streamNames(outputs: readonly CellOutput[]): Set<string> {
  return new Set(outputs.flatMap(output => (output.output_type === 'stream' ? [output.name] : [])));
}

function streamText(outputs: readonly CellOutput[], name: string): string {
  return outputs.map(output => (output.output_type === 'stream' && output.name === name ? output.text : '')).join('');
}

/** The length of the longest start of `later` that `earlier` ends with. */
function overlap(earlier: string, later: string): number {
  for (let length = Math.min(earlier.length, later.length); length > 0; length--) {
    if (earlier.endsWith(later.slice(0, length))) {
      return length;
    }
  }
  return 0;
}

function sameOutput(a: CellOutput, b: CellOutput): boolean {
  if (a.output_type === 'error' && b.output_type === 'error') {
    return a.ename === b.ename && a.evalue === b.evalue;
  }
  if (a.output_type === 'execute_result' && b.output_type === 'execute_result') {
    return a.data['text/plain'] === b.data['text/plain'];
  }
  return false;
}

/** What this module needs of a JupyterLab code cell (`@jupyterlab/cells`' CodeCell), which it does not import. */
export interface ICodeCellLike {
  readonly model: {
    readonly outputs: {
      readonly length: number;
      get(index: number): { toJSON(): unknown };
      set(index: number, output: CellOutput): void;
      add(output: CellOutput): number;
    };
    executionCount: number | null;
  };
  readonly outputArea: {
    readonly future?: {
      readonly msg: { readonly header: { readonly msg_id: string; readonly date?: string } };
      readonly isDisposed: boolean;
      dispose(): void;
    } | null;
  };
}

/**
 * Finish the cells among `cells` that wait for a request in `unanswered`: their outputs put right
 * (restoredOutputs), their wait ended (their future disposed, which JupyterLab takes as an execution cut short)
 * and then, once JupyterLab has handled that, their execution counts. Returns the msg_ids of the cells finished.
 */
export function finishCells(
  cells: Iterable<ICodeCellLike>,
  unanswered: readonly IUnanswered[],
  later: (then: () => void) => void = then => setTimeout(then, 0)
): string[] {
  const ended = new Map(unanswered.map(request => [request.cell, request]));
  const finished: string[] = [];
  for (const cell of cells) {
    const future = cell.outputArea.future;
    const request = future && !future.isDisposed ? ended.get(future.msg.header.msg_id) : undefined;
    if (!future || !request) {
      continue;
    }
    const outputs = cell.model.outputs;
    const shown = Array.from({ length: outputs.length }, (_, index) => outputs.get(index).toJSON() as CellOutput);
    const restored = restoredOutputs(shown, request.outputs ?? [], request.count, request.complete);
    restored.set.forEach(([index, output]) => outputs.set(index, output));
    restored.add.forEach(output => outputs.add(output));
    future.dispose();
    later(() => {
      cell.model.executionCount = request.count;
    });
    finished.push(request.cell);
  }
  return finished;
}

/**
 * The cells of `cells` that wait for a request sent before `takenOverAt` (seconds since the epoch): sent
 * through the server before, their replies will not come.
 */
export function waitingSince(cells: Iterable<ICodeCellLike>, takenOverAt: number): ICodeCellLike[] {
  return [...cells].filter(cell => {
    const future = cell.outputArea.future;
    const sent = Date.parse(future?.msg.header.date ?? '');
    return !!future && !future.isDisposed && sent < takenOverAt * 1000;
  });
}

/**
 * Asks the server, after each answer about the kernels, for the unanswered requests of each kernel taken over
 * whose open notebooks have cells waiting since before the take-over (at most every `every` ms per kernel), and
 * finishes those cells. Nothing is asked while no cell waits so.
 */
export class UnansweredCells {
  constructor(
    private readonly api: Pick<AsgardAPI, 'kernel'>,
    private readonly cellsOf: (kernelId: string) => ICodeCellLike[],
    private readonly every = 5000
  ) {}

  async check(rows: readonly IKernelRow[], now = Date.now()): Promise<void> {
    for (const row of rows) {
      if (row.taken_over_at === null || row.taken_over_at === undefined) {
        continue;
      }
      const waiting = waitingSince(this.cellsOf(row.kernel_id), row.taken_over_at);
      if (!waiting.length || now - (this.asked.get(row.kernel_id) ?? -Infinity) < this.every) {
        continue;
      }
      this.asked.set(row.kernel_id, now);
      try {
        const detail = await this.api.kernel(row.kernel_id);
        finishCells(waiting, detail.unanswered ?? []);
      } catch (error) {
        console.warn(`jupyter-asgard: the unanswered cells of ${row.kernel_id}:`, error);
      }
    }
  }

  private readonly asked = new Map<string, number>();
}

/** The code cells of a notebook panel (its content's cells that have an output area), or none. */
export function codeCellsOf(widget: unknown): ICodeCellLike[] {
  const cells = (widget as { content?: { widgets?: readonly unknown[] } } | null)?.content?.widgets ?? [];
  return cells.filter((cell): cell is ICodeCellLike => !!(cell as Partial<ICodeCellLike>).outputArea);
}
