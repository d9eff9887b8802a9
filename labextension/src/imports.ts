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

/** A running import's layers as a progress bar shows them, or null while their number is unknown. */
export function layersOf(found: IImageImport): { done: number; total: number } | null {
  const { layers_done: done, layers_total: total } = found.progress ?? { layers_done: 0, layers_total: 0 };
  if (found.state !== 'importing' || !total) {
    return null;
  }
  return { done: Math.min(done, total), total };
}

/** "2 of 5 layers", beside the progress bar. */
export function layerWords(layers: { done: number; total: number }): string {
  return `${layers.done} of ${layers.total} layer${layers.total === 1 ? '' : 's'}`;
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
