/**
 * Image imports in words, and the small decisions about them: whether one runs, its layers as a progress bar's
 * values, which ended since the last listing, and a listing with a new import in it. Pure functions of the
 * API's answers: no DOM, no JupyterLab (the side panel's Images section renders them).
 */
import type { IImageImport } from './api';

/** The URI field's example: the form `enroot import` reads (registry, '#', repository:tag). */
export const URI_PLACEHOLDER = 'docker://nvcr.io#nvidia/pytorch:24.05-py3';

/** What the dialog says about the two fields. */
export const URI_LABEL = 'Registry image (enroot URI)';
export const NAME_LABEL = 'Name (optional: saved as NAME.sqsh in your image directory; made from the URI if empty)';

/** Whether an import still runs: queued in Slurm or importing on a node. */
export function isRunning(found: IImageImport): boolean {
  return found.state === 'queued' || found.state === 'importing';
}

/** A progress bar's values and the words beside it. */
export interface IProgressBar {
  value: number;
  max: number;
  words: string;
}

/**
 * A running import's progress bar: mksquashfs's percentage while it makes the image, else the layers fetched
 * (which stay full while enroot extracts them); null in the queue, while nothing is counted yet, and once ended.
 */
export function progressBar(found: IImageImport): IProgressBar | null {
  const progress = found.progress;
  if (found.state !== 'importing' || !progress) {
    return null;
  }
  if (progress.phase === 'squashfs' && typeof progress.percent === 'number' && progress.percent >= 0) {
    return { value: progress.percent, max: 100, words: `squashfs ${progress.percent}%` };
  }
  const { layers_done: done, layers_total: total } = progress;
  if (!total) {
    return null;
  }
  return { value: Math.min(done, total), max: total, words: layerWords(Math.min(done, total), total) };
}

/** "2 of 5 layers", beside the progress bar. */
export function layerWords(done: number, total: number): string {
  return `${done} of ${total} layer${total === 1 ? '' : 's'}`;
}

/** The row's tooltip: what is imported where, and by which job. */
export function importTitle(found: IImageImport): string {
  return [
    found.uri,
    `into ${found.path}`,
    found.job_id ? `Slurm job ${found.job_id}` : '',
    found.progress?.digest ? `digest ${found.progress.digest}` : ''
  ]
    .filter(part => part)
    .join('\n');
}

/** The imports that ran at the last listing and have ended since (each is told about once). */
export function justEnded(before: readonly IImageImport[], now: readonly IImageImport[]): IImageImport[] {
  const running = new Set(before.filter(isRunning).map(found => found.id));
  return now.filter(found => running.has(found.id) && !isRunning(found));
}

/** How an import ended, in one sentence for a notification; "" for one that runs. */
export function endedWords(found: IImageImport): string {
  switch (found.state) {
    case 'imported':
      return `Imported ${found.uri} as ${found.path}: it is in your image list now.`;
    case 'failed':
      return `The import of ${found.uri} failed: ${found.message || found.status}`;
    case 'cancelled':
      return `The import of ${found.uri} was cancelled.`;
    default:
      return '';
  }
}

/** The listing with one import as the server answered it, in place of its older state or added at the end. */
export function withImport(imports: readonly IImageImport[], found: IImageImport): IImageImport[] {
  return imports.some(known => known.id === found.id)
    ? imports.map(known => (known.id === found.id ? found : known))
    : [...imports, found];
}
