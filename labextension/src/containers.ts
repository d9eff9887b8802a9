/**
 * The user's named containers and "Bring it here" in words, and the small decisions about them: what the
 * Containers section shows of each container, whether a kernel's card offers to bring its container over, how
 * a move stands, and the status bar's short form of a kernel's container notice. Pure functions of the API's
 * answers: no DOM, no JupyterLab (the side panel and the status bar render them).
 */
import type { IContainer, IContainerMove, IKernelRow } from './api';
import { detachedName } from './detach';
import { imageName } from './format';

/** Before the status bar's short notice: the kernel runs away from what was installed in its container. */
export const NOTICE_MARK = '⚠';

/** Whether a move is under way: its container being saved on its node, or the kernel restarting with it. */
export function moveUnderway(move: IContainerMove | null | undefined): boolean {
  return move?.state === 'saving' || move?.state === 'restarting';
}

/** Whether a kernel's card offers "Bring it here": its container is on another node, and no move runs. */
export function canBring(row: Pick<IKernelRow, 'container_home' | 'container_move'>): boolean {
  return !!row.container_home && !moveUnderway(row.container_move);
}

/** The status bar's short form of a kernel's container notice (its text, without the mark) and its tooltip. */
export interface IShortNotice {
  text: string;
  title: string;
}

/**
 * The status bar's words for the kernel's container: "container on gpu02" while it runs away from it, "bringing
 * container from gpu02" while a move runs; null when there is nothing to tell.
 */
export function shortNotice(
  row: Pick<IKernelRow, 'container_notice' | 'container_home' | 'container_move'>
): IShortNotice | null {
  const move = row.container_move;
  if (move && moveUnderway(move)) {
    return { text: `bringing container from ${move.from_node}`, title: moveWords(move) };
  }
  const notice = row.container_notice;
  if (!notice) {
    return null;
  }
  const home = row.container_home;
  const text = home ? `container on ${home}` : /\bno longer on\b/.test(notice) ? 'container made anew' : 'container';
  const failed = move?.state === 'failed' ? `\n${moveWords(move)}` : '';
  return { text, title: `${capitalized(notice)}${failed}` };
}

/** A move's state in words on the kernel's card: the server's message after where the move stands. */
export function moveWords(move: IContainerMove): string {
  const lead = {
    saving: 'Bringing it here (1 of 2): ',
    restarting: 'Bringing it here (2 of 2): ',
    done: 'Brought here: ',
    failed: 'Not brought here: '
  }[move.state];
  const fallback = {
    saving: `saving the container on ${move.from_node}`,
    restarting: 'restarting the kernel with the copy',
    done: `the container is here now, with what was installed in it on ${move.from_node}`,
    failed: 'the server did not say why'
  }[move.state];
  return `${lead ?? ''}${move.message || fallback || move.state}${moveUnderway(move) ? '…' : ''}`;
}

/** What "Bring it here" does, asked before it does it. */
export function bringQuestion(
  row: Pick<IKernelRow, 'kernel_id' | 'path' | 'node' | 'container' | 'container_home'>
): string {
  const from = row.container_home || 'its node';
  const here = row.node || 'its node';
  return (
    `Your container ${row.container} is saved on ${from}, and the kernel of ${detachedName(row)} restarts on ` +
    `${here} in a copy of it: what was installed in it comes along. What is in the kernel's memory (variables, ` +
    'imports, a cell still running) is lost.'
  );
}

/** What Remove does, asked before it does it. */
export function removeQuestion(container: Pick<IContainer, 'name' | 'image'>, node: string): string {
  const image = container.image ? ` (${container.image})` : '';
  return (
    `The container ${container.name} is deleted from ${node}'s storage, with everything that was installed in it ` +
    `there. A kernel that uses it on ${node} next starts from a fresh copy of its image${image}. This cannot be ` +
    'undone.'
  );
}

/** How the container's filesystem is mounted in its kernels. */
export function writableWords(writable: boolean | null | undefined): string {
  if (writable === true) {
    return 'writable';
  }
  return writable === false ? 'read-only' : "Pyxis's default";
}

/** When a container was last used: "today 14:05", or "2026-01-30 14:05" (local time); "—" when unknown. */
export function lastUseWords(iso: string, now: Date = new Date()): string {
  const at = new Date(iso);
  if (!iso || Number.isNaN(at.getTime())) {
    return '—';
  }
  const day = (date: Date): string =>
    `${date.getFullYear()}-${String(date.getMonth() + 1).padStart(2, '0')}-${String(date.getDate()).padStart(2, '0')}`;
  const clock = `${String(at.getHours()).padStart(2, '0')}:${String(at.getMinutes()).padStart(2, '0')}`;
  return `${day(at) === day(now) ? 'today' : day(at)} ${clock}`;
}

/** "analysis.ipynb on gpu02, kernel 0a1b2c3d on gpu01": the kernels that run in a container; "none". */
export function kernelsWords(container: Pick<IContainer, 'kernels'>, rows: readonly IKernelRow[]): string {
  const names = (container.kernels ?? []).map(kernel => {
    const row = rows.find(candidate => candidate.kernel_id === kernel.kernel_id);
    return `${detachedName(row ?? { kernel_id: kernel.kernel_id, path: '' })} on ${kernel.node}`;
  });
  return names.join(', ') || 'none';
}

/** What the Containers section shows of a container, field by field (in this order). */
export function containerFields(
  container: IContainer,
  rows: readonly IKernelRow[],
  now: Date = new Date()
): [string, string][] {
  return [
    ['Nodes', container.nodes.join(', ') || '—'],
    ['Image', imageName(container.image) || '—'],
    ['Filesystem', writableWords(container.writable)],
    ['Last use', lastUseWords(container.last_use, now)],
    ['Kernels', kernelsWords(container, rows)]
  ];
}

function capitalized(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
