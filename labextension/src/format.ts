/**
 * Where a kernel's Slurm job stands, in words. Pure functions of the API's rows: no DOM, no JupyterLab.
 */
import type { IGpus, IKernelRow } from './api';

/** The phase of a kernel's job, what the status item and the panel colour it by. */
export type Phase = 'starting' | 'queued' | 'running' | 'ending' | 'ended';

const ENDED_WORDS: { [state: string]: string } = {
  BOOT_FAIL: 'node boot failure',
  CANCELLED: 'cancelled',
  COMPLETED: 'completed',
  DEADLINE: 'deadline reached',
  FAILED: 'failed',
  NODE_FAIL: 'node failure',
  OUT_OF_MEMORY: 'out of memory',
  PREEMPTED: 'preempted',
  REVOKED: 'revoked',
  SPECIAL_EXIT: 'failed',
  TIMEOUT: 'time limit'
};

/** Slurm's job state without additions such as "CANCELLED by 1000". */
export function baseState(state: string): string {
  return state.trim().split(/\s+/)[0].toUpperCase();
}

export function phaseOf(state: string): Phase {
  const base = baseState(state);
  if (base in ENDED_WORDS) {
    return 'ended';
  }
  switch (base) {
    case 'PENDING':
    case 'REQUEUED':
    case 'REQUEUE_HOLD':
    case 'REQUEUE_FED':
    case 'RESV_DEL_HOLD':
    case 'SUSPENDED':
    case 'STOPPED':
      return 'queued';
    case 'RUNNING':
    case 'SIGNALING':
    case 'RESIZING':
      return 'running';
    case 'COMPLETING':
    case 'STAGE_OUT':
      return 'ending';
    default:
      return 'starting'; // SUBMITTING, CONFIGURING, or no state yet
  }
}

/** "time limit", "cancelled", ...: why a job ended. */
export function endedWords(state: string): string {
  const base = baseState(state);
  return ENDED_WORDS[base] ?? base.toLowerCase().replace(/_/g, ' ');
}

/** Slurm's pending reason in words, e.g. Resources → "waiting for GPUs". */
export function reasonWords(reason: string, gpus?: IGpus): string {
  const wantsGpus = (gpus?.count ?? 0) > 0;
  switch (reason) {
    case '':
    case 'None':
      return 'waiting to be scheduled';
    case 'Resources':
      return wantsGpus ? 'waiting for GPUs' : 'waiting for free nodes';
    case 'Priority':
      return 'waiting behind jobs of higher priority';
    case 'Dependency':
      return 'waiting for another job';
    case 'DependencyNeverSatisfied':
      return 'its dependency can never be satisfied';
    case 'BeginTime':
      return 'waiting for its start time';
    case 'JobHeldUser':
    case 'JobHeldAdmin':
      return 'held';
    case 'ReqNodeNotAvail':
      return 'its nodes are unavailable';
    case 'PartitionDown':
    case 'PartitionInactive':
      return 'the partition is down';
    case 'PartitionTimeLimit':
      return "time limit above the partition's";
    case 'Reservation':
      return 'waiting for its reservation';
  }
  if (/PerUser|AssocMax/.test(reason)) {
    return /GRES/.test(reason) ? 'at your GPU limit' : 'at your limit';
  }
  if (/Grp/.test(reason)) {
    return /GRES/.test(reason) ? "at your group's GPU limit" : "at your group's limit";
  }
  return 'waiting';
}

/** A queued kernel whose start Slurm cannot tell; the row's reason says why. */
export const UNKNOWN_START = 'start time unknown to Slurm';

/** "next in line", "1 ahead", "3 ahead", or "" when Slurm did not say. */
export function aheadWords(position: number | null | undefined): string {
  if (position === null || position === undefined || position < 0) {
    return '';
  }
  return position === 0 ? 'next in line' : `${position} ahead`;
}

/**
 * When Slurm expects a queued kernel to start: "expected 14:35 (in ~45m)", "expected 12-02 09:10 (in ~1d2h)"
 * beyond the day, "expected any moment", or that Slurm cannot tell (no estimate yet, or what the job needs is
 * held by jobs without a time limit: the server never passes Slurm's far-future placeholders on as a time).
 */
export function expectedWords(row: Pick<IKernelRow, 'expected_start' | 'expected_start_seconds'>): string {
  const seconds = row.expected_start_seconds;
  if (seconds === null || seconds === undefined || !row.expected_start) {
    return UNKNOWN_START;
  }
  if (seconds < 60) {
    return 'expected any moment';
  }
  const clock = row.expected_start.slice(11, 16); // HH:MM of Slurm's YYYY-MM-DDTHH:MM:SS
  const day = seconds >= 20 * 3600 ? `${row.expected_start.slice(5, 10)} ` : '';
  return `expected ${day}${clock} (in ~${duration(seconds)})`;
}

/** A starting kernel: "starting: creating container filesystem (12s)" while Pyxis reports its setup. */
export function phaseWords(row: Pick<IKernelRow, 'phase' | 'phase_seconds'>): string {
  if (!row.phase) {
    return 'starting';
  }
  const seconds =
    row.phase_seconds === null || row.phase_seconds === undefined ? '' : ` (${duration(row.phase_seconds)})`;
  return `starting: ${row.phase}${seconds}`;
}

/** "12m", or "12m, shut down in 48m if it stays idle" where the server culls idle kernels; "" if unknown. */
export function idleWords(row: Pick<IKernelRow, 'idle_seconds' | 'cull_in_seconds'>): string {
  if (row.idle_seconds === null || row.idle_seconds === undefined) {
    return '';
  }
  const cull = row.cull_in_seconds;
  const ending = cull === null || cull === undefined ? '' : `, shut down in ${duration(cull)} if it stays idle`;
  return `${duration(row.idle_seconds)}${ending}`;
}

/** 8133 → "2h15m", 2700 → "45m", 40 → "40s", 93600 → "1d2h". */
export function duration(seconds: number): string {
  const total = Math.max(0, Math.floor(seconds));
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  if (days > 0) {
    return hours > 0 ? `${days}d${hours}h` : `${days}d`;
  }
  if (hours > 0) {
    return minutes > 0 ? `${hours}h${minutes}m` : `${hours}h`;
  }
  if (minutes > 0) {
    return `${minutes}m`;
  }
  return `${total % 60}s`;
}

/** "1x H100", "2x A100", "1 GPU", "2 GPUs", or "" for none. */
export function gpuWords(gpus: IGpus | null | undefined): string {
  if (!gpus || !gpus.count) {
    return '';
  }
  if (gpus.type) {
    return `${gpus.count}x ${gpus.type.toUpperCase()}`;
  }
  return gpus.count === 1 ? '1 GPU' : `${gpus.count} GPUs`;
}

/** What is left of the job's time: "2h13m", "no limit", or "" when unknown. */
export function timeLeft(row: Pick<IKernelRow, 'time_left' | 'time_left_seconds'>): string {
  if (row.time_left_seconds !== null && row.time_left_seconds !== undefined) {
    return duration(row.time_left_seconds);
  }
  return /^(UNLIMITED|INFINITE|NOT_SET)$/i.test(row.time_left) ? 'no limit' : '';
}

/** "2h13m left", "no time limit", or "" when unknown. */
export function timeLeftWords(row: Pick<IKernelRow, 'time_left' | 'time_left_seconds'>): string {
  const left = timeLeft(row);
  return left === 'no limit' ? 'no time limit' : left ? `${left} left` : '';
}

/**
 * Where the job stands, without the running job's node, GPUs and time: "running", "queued: waiting for
 * GPUs (Resources), 3 ahead", "ended: time limit". The panel shows the rest in fields of their own.
 */
export function stateWords(row: IKernelRow): string {
  const base = baseState(row.state);
  switch (phaseOf(row.state)) {
    case 'queued': {
      const words = base === 'PENDING' ? reasonWords(row.reason, row.gpus) : base.toLowerCase();
      const reason = base === 'PENDING' && row.reason && row.reason !== 'None' ? ` (${row.reason})` : '';
      return joined(`queued: ${words}${reason}`, aheadWords(row.queue_position), expectedWords(row));
    }
    case 'running':
      switch (row.execution_state) {
        case 'restarting':
          return 'restarting';
        case 'starting':
        case 'autorestarting':
        case null:
        case '':
          return phaseWords(row); // the server has no kernel state before the kernel answers
        default:
          return 'running';
      }
    case 'ending':
      return row.node ? `ending: releasing ${row.node}` : 'ending: releasing its nodes';
    case 'ended':
      return `ended: ${endedWords(row.state)}`;
    default:
      return base === 'CONFIGURING' && row.node ? `starting: configuring ${row.node}` : 'starting: submitting to Slurm';
  }
}

/** The status bar's words for a kernel's job: "running on gpu01, 1x H100, 2h13m left", ... */
export function describe(row: IKernelRow): string {
  let text = stateWords(row);
  if (phaseOf(row.state) === 'running') {
    text = joined(row.node ? `${text} on ${row.node}` : text, gpuWords(row.gpus), timeLeftWords(row));
  }
  return row.slurm_reachable === false ? `${text} (Slurm unreachable)` : text;
}

/** A longer line for the status item's tooltip: job, partition, image. */
export function details(row: IKernelRow): string {
  const parts = [
    row.display_name || row.kernel_name,
    row.job_id ? `Slurm job ${row.job_id}` : 'no Slurm job yet',
    row.partition ? `partition ${row.partition}` : '',
    row.time_limit ? `time limit ${row.time_limit}` : '',
    row.image ? `image ${imageName(row.image)}` : ''
  ];
  return parts.filter(part => part).join(' · ');
}

/** "analysis.ipynb" from "projects/analysis.ipynb"; "" for no path. */
export function notebookName(path: string): string {
  const parts = path.split('/').filter(part => part);
  return parts.length ? parts[parts.length - 1] : '';
}

/** "nvcr.io_nvidia_pytorch_23.12-py3" from its squashfs file's path; a registry URI stays as it is. */
export function imageName(image: string): string {
  if (!image.startsWith('/')) {
    return image;
  }
  return notebookName(image).replace(/\.sqsh$/, '');
}

/** How a kernel's traffic goes, in words for the side panel ("" before it has started). */
export function encryptionWords(encryption: string): string {
  const words: { [mode: string]: string } = {
    curve: 'encrypted (CurveZMQ)',
    'curve-proxy': 'encrypted (CurveZMQ, through a proxy in the container)',
    none: 'not encrypted'
  };
  return words[encryption] ?? encryption;
}

function joined(...parts: string[]): string {
  return parts.filter(part => part).join(', ');
}

/** Seconds of Slurm's duration text ("30", "30:00", "2:00:00", "1-00:00:00"), or null ("UNLIMITED", ...). */
export function slurmSeconds(text: string): number | null {
  const match = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/.exec(text.trim());
  if (!match) {
    return null;
  }
  const [, days, first, second, third] = match;
  let hours = 0;
  let minutes: number;
  let seconds = 0;
  if (third !== undefined) {
    [hours, minutes, seconds] = [Number(first), Number(second), Number(third)];
  } else if (second !== undefined) {
    // "MM:SS", but "D-HH:MM" with days
    [hours, minutes, seconds] =
      days !== undefined ? [Number(first), Number(second), 0] : [0, Number(first), Number(second)];
  } else {
    // "MM", but "D-HH" with days
    [hours, minutes] = days !== undefined ? [Number(first), 0] : [0, Number(first)];
  }
  return Number(days ?? 0) * 86400 + hours * 3600 + minutes * 60 + seconds;
}

/** A partition's time limit in words: "30m at most", "2h at most", or "no time limit". */
export function timeLimitWords(text: string): string {
  const seconds = slurmSeconds(text);
  if (seconds !== null) {
    return `${duration(seconds)} at most`;
  }
  return /^(infinite|unlimited)$/i.test(text.trim()) ? 'no time limit' : `time limit ${text}`;
}

/** A partition's GPUs: "3 of 4 H100 free", one entry per type; "" for none. */
export function freeGpuWords(gpus: { [type: string]: { total: number; free: number } }): string {
  return Object.keys(gpus)
    .sort()
    .filter(type => gpus[type].total > 0)
    .map(type => `${gpus[type].free} of ${gpus[type].total}${type ? ` ${type.toUpperCase()}` : ''} free`)
    .join(', ');
}

/** A partition's nodes by state: "2 nodes: 2 idle", "2 nodes: 1 mixed, 1 allocated", "1 node: idle". */
export function nodeWords(nodes: readonly { name: string; state: string }[]): string {
  const counts = new Map<string, number>();
  for (const node of nodes) {
    const state = node.state.replace(/[*~#!%$@^-]+$/, '') || 'unknown';
    counts.set(state, (counts.get(state) ?? 0) + 1);
  }
  if (nodes.length <= 1) {
    return nodes.length ? `1 node: ${[...counts.keys()][0]}` : 'no nodes';
  }
  return `${nodes.length} nodes: ${[...counts].map(([state, count]) => `${count} ${state}`).join(', ')}`;
}
