// What the unit tests share: a kernel row and an image import as the API answers them, and a Web Storage stand-in.
import type { IImageImport, IKernelRow } from '../src/api';
import type { IKeyValueStore } from '../src/sentalerts';

/** A running kernel's row, with changes. */
export function row(changes: Partial<IKernelRow> = {}): IKernelRow {
  return {
    kernel_id: 'k1',
    kernel_name: 'asgard-pytorch',
    display_name: 'Asgard PyTorch',
    execution_state: 'idle',
    job_id: '42',
    state: 'RUNNING',
    reason: '',
    queue_position: null,
    expected_start: '',
    expected_start_seconds: null,
    node: 'gpu01',
    gpus: { count: 1, type: 'h100' },
    partition: 'gpu',
    start_time: '2026-01-01T10:00:00',
    time_limit: '4:00:00',
    time_left: '2:13:00',
    time_left_seconds: 2 * 3600 + 13 * 60,
    image: '/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh',
    slurm_reachable: true,
    path: 'projects/analysis.ipynb',
    encryption: 'curve-proxy',
    detachable: false,
    taken_over_at: null,
    phase: '',
    phase_seconds: null,
    idle_seconds: null,
    cull_in_seconds: null,
    container: 'jupyter-asgard-pytorch-1a2b3c4d',
    container_notice: '',
    container_home: '',
    container_move: null,
    ...changes
  };
}

/** A sessionStorage or localStorage of one page or tab, in memory. */
export function memoryStore(): IKeyValueStore {
  const items = new Map<string, string>();
  return {
    getItem: (key: string) => items.get(key) ?? null,
    setItem: (key: string, value: string) => void items.set(key, value)
  };
}

/** An import as GET /asgard/api/images/import lists it: importing, layer 2 of 5; with changes. */
export function imageImport(changes: Partial<IImageImport> = {}): IImageImport {
  return {
    id: 'a1b2c3d4e5f6',
    uri: 'docker://nvcr.io#nvidia/pytorch:24.05-py3',
    name: 'nvcr.io_nvidia_pytorch_24.05-py3',
    path: '/netscratch/ada/images/nvcr.io_nvidia_pytorch_24.05-py3.sqsh',
    state: 'importing',
    status: 'downloading layers 2 of 5',
    progress: { phase: 'downloading', layers_done: 2, layers_total: 5, percent: null, digest: 'sha256:ab12' },
    message: '',
    hint: '',
    job_id: '12',
    size: 0,
    started: '2026-01-01T10:00:00+00:00',
    finished: '',
    ...changes
  };
}
