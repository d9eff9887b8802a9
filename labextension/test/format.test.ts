// Unit tests of the pure functions: a job's state in words, and when to warn (node --test, via npm test).
import { strict as assert } from 'node:assert';
import { describe as group, test } from 'node:test';

import { alertsFor, CURVE_METADATA, LOW_TIME_SECONDS, REQUIRE_ENCRYPTION, vanishedAlert } from '../src/alerts';
import {
  describe,
  duration,
  encryptionWords,
  expectedWords,
  idleWords,
  freeGpuWords,
  gpuWords,
  imageName,
  nodeWords,
  phaseOf,
  reasonWords,
  slurmSeconds,
  stateWords,
  timeLimitWords,
  UNKNOWN_START
} from '../src/format';
import { SentAlerts } from '../src/sentalerts';
import { memoryStore, row } from './fixtures';

group('describe', () => {
  test('a queued kernel: the reason in words, Slurm’s word, and how many jobs are ahead', () => {
    const queued = row({ state: 'PENDING', reason: 'Resources', queue_position: 3, node: '', time_left_seconds: null });
    // no expected start in these rows: Slurm has none, or gave its placeholder, which the server drops
    assert.equal(describe(queued), 'queued: waiting for GPUs (Resources), 3 ahead, start time unknown to Slurm');
    assert.equal(
      describe({ ...queued, queue_position: 0 }),
      'queued: waiting for GPUs (Resources), next in line, start time unknown to Slurm'
    );
    assert.equal(
      describe({ ...queued, queue_position: null }),
      'queued: waiting for GPUs (Resources), start time unknown to Slurm'
    );
    assert.equal(
      describe({ ...queued, reason: 'Priority', queue_position: 1 }),
      'queued: waiting behind jobs of higher priority (Priority), 1 ahead, start time unknown to Slurm'
    );
    assert.equal(
      describe({ ...queued, reason: 'None' }),
      'queued: waiting to be scheduled, 3 ahead, start time unknown to Slurm'
    );
  });

  test('a running kernel: node, GPUs and time left', () => {
    assert.equal(describe(row()), 'running on gpu01, 1x H100, 2h13m left');
    assert.equal(describe(row({ gpus: { count: 2, type: '' } })), 'running on gpu01, 2 GPUs, 2h13m left');
    assert.equal(
      describe(row({ time_left_seconds: null, time_left: 'UNLIMITED' })),
      'running on gpu01, 1x H100, no time limit'
    );
    assert.equal(describe(row({ execution_state: 'starting' })), 'starting on gpu01, 1x H100, 2h13m left');
    assert.equal(describe(row({ execution_state: null })), 'starting on gpu01, 1x H100, 2h13m left');
    assert.equal(describe(row({ execution_state: 'restarting' })), 'restarting on gpu01, 1x H100, 2h13m left');
  });

  test('starting, ending and ended jobs', () => {
    assert.equal(describe(row({ state: 'SUBMITTING', job_id: '', node: '' })), 'starting: submitting to Slurm');
    assert.equal(describe(row({ state: '', job_id: '', node: '' })), 'starting: submitting to Slurm');
    assert.equal(describe(row({ state: 'CONFIGURING' })), 'starting: configuring gpu01');
    assert.equal(describe(row({ state: 'COMPLETING' })), 'ending: releasing gpu01');
    assert.equal(describe(row({ state: 'TIMEOUT' })), 'ended: time limit');
    assert.equal(describe(row({ state: 'CANCELLED by 1000' })), 'ended: cancelled');
    assert.equal(describe(row({ state: 'NODE_FAIL' })), 'ended: node failure');
    assert.equal(describe(row({ state: 'OUT_OF_MEMORY' })), 'ended: out of memory');
  });

  test('says when Slurm cannot be reached', () => {
    assert.equal(
      describe(row({ slurm_reachable: false })),
      'running on gpu01, 1x H100, 2h13m left (Slurm unreachable)'
    );
  });

  test('the panel’s state words leave node, GPUs and time to their own fields', () => {
    assert.equal(stateWords(row()), 'running');
    assert.equal(
      stateWords(row({ state: 'PENDING', reason: 'Resources', queue_position: 0 })),
      'queued: waiting for GPUs (Resources), next in line, start time unknown to Slurm'
    );
  });
});

group('words', () => {
  test('phases', () => {
    assert.deepEqual(
      ['SUBMITTING', 'PENDING', 'CONFIGURING', 'RUNNING', 'COMPLETING', 'TIMEOUT', 'SUSPENDED', 'REQUEUED'].map(
        phaseOf
      ),
      ['starting', 'queued', 'starting', 'running', 'ending', 'ended', 'queued', 'queued']
    );
  });

  test('pending reasons', () => {
    assert.equal(reasonWords('Resources', { count: 0, type: '' }), 'waiting for free nodes');
    assert.equal(reasonWords('QOSMaxGRESPerUser'), 'at your GPU limit');
    assert.equal(reasonWords('AssocGrpGRES'), "at your group's GPU limit");
    assert.equal(reasonWords('QOSMaxJobsPerUserLimit'), 'at your limit');
    assert.equal(reasonWords('SomethingNew'), 'waiting');
  });

  test('durations', () => {
    assert.deepEqual([0, 40, 60, 2700, 3600, 8000, 86400, 93600].map(duration), [
      '0s',
      '40s',
      '1m',
      '45m',
      '1h',
      '2h13m',
      '1d',
      '1d2h'
    ]);
    assert.equal(duration(-5), '0s');
  });

  test('GPUs', () => {
    assert.equal(gpuWords({ count: 0, type: '' }), '');
    assert.equal(gpuWords({ count: 1, type: '' }), '1 GPU');
    assert.equal(gpuWords({ count: 4, type: 'a100' }), '4x A100');
  });

  test('Slurm durations and partition limits', () => {
    assert.equal(slurmSeconds('30'), 1800);
    assert.equal(slurmSeconds('30:00'), 1800);
    assert.equal(slurmSeconds('2:00:00'), 7200);
    assert.equal(slurmSeconds('1-00:00:00'), 86400);
    assert.equal(slurmSeconds('1-12'), 86400 + 12 * 3600);
    assert.equal(slurmSeconds('1-02:30'), 86400 + 2 * 3600 + 30 * 60);
    assert.equal(slurmSeconds('infinite'), null);
    assert.equal(timeLimitWords('30:00'), '30m at most');
    assert.equal(timeLimitWords('infinite'), 'no time limit');
    assert.equal(timeLimitWords('UNLIMITED'), 'no time limit');
  });

  test('partitions', () => {
    assert.equal(freeGpuWords({ h100: { total: 4, free: 3 } }), '3 of 4 H100 free');
    assert.equal(
      freeGpuWords({ '': { total: 2, free: 0 }, a100: { total: 8, free: 8 } }),
      '0 of 2 free, 8 of 8 A100 free'
    );
    assert.equal(freeGpuWords({}), '');
    assert.equal(
      nodeWords([
        { name: 'gpu01', state: 'idle' },
        { name: 'gpu02', state: 'mixed' },
        { name: 'gpu03', state: 'idle*' }
      ]),
      '3 nodes: 2 idle, 1 mixed'
    );
    assert.equal(nodeWords([{ name: 'gpu02', state: 'drained' }]), '1 node: drained');
    assert.equal(nodeWords([]), 'no nodes');
  });

  test('image names', () => {
    assert.equal(imageName('/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh'), 'nvcr.io_nvidia_pytorch_23.12-py3');
    assert.equal(imageName('docker://nvcr.io#nvidia/pytorch:24.05-py3'), 'docker://nvcr.io#nvidia/pytorch:24.05-py3');
  });
});

group('alerts', () => {
  test('warn once when less than 10 minutes are left', () => {
    assert.deepEqual(alertsFor([row({ time_left_seconds: LOW_TIME_SECONDS })], new Set()), []);
    const alerts = alertsFor([row({ time_left_seconds: 9 * 60 + 30 })], new Set());
    assert.equal(alerts.length, 1);
    assert.equal(alerts[0].key, 'k1:42:low-time');
    assert.match(
      alerts[0].message,
      /^The Asgard kernel of analysis\.ipynb: 9m left in its Slurm allocation \(job 42\)/
    );
    assert.ok(alerts[0].message.length <= 140, 'Notification truncates longer messages');
    assert.deepEqual(alertsFor([row({ time_left_seconds: 300 })], new Set([alerts[0].key])), []);
  });

  test('no warning for a queued job or one without a time limit', () => {
    assert.deepEqual(alertsFor([row({ state: 'PENDING', time_left_seconds: 60 })], new Set()), []);
    assert.deepEqual(alertsFor([row({ time_left_seconds: null, time_left: 'UNLIMITED' })], new Set()), []);
  });

  test('warn once when the job ends under the kernel', () => {
    const alerts = alertsFor([row({ state: 'TIMEOUT', time_left_seconds: 0 })], new Set());
    assert.deepEqual(
      alerts.map(alert => alert.key),
      ['k1:42:ended']
    );
    assert.equal(
      alerts[0].message,
      'The Asgard kernel of analysis.ipynb: its Slurm job 42 ended (time limit). Start a new kernel.'
    );
    assert.deepEqual(alertsFor([row({ state: 'TIMEOUT' })], new Set(['k1:42:ended'])), []);
  });

  test('a vanished row shares the ended key, and names the time limit when it was near', () => {
    assert.equal(vanishedAlert(row()).key, 'k1:42:ended');
    assert.equal(
      vanishedAlert(row()).message,
      'The Asgard kernel of analysis.ipynb: its Slurm job 42 ended. Start a new kernel.'
    );
    assert.match(vanishedAlert(row({ time_left_seconds: 20 })).message, /ended \(time limit\)/);
    assert.match(vanishedAlert(row({ path: '' })).message, /^Asgard kernel Asgard PyTorch:/);
  });
});

group('kernels in the clear', () => {
  test('a kernel in the clear is warned about once, with what it means and how to fix it', () => {
    const clear = row({ encryption: 'none' });
    const alerts = alertsFor([clear], new Set());
    assert.deepEqual(
      alerts.map(alert => alert.key),
      ['k1:clear-traffic']
    );
    assert.equal(
      alerts[0].message,
      'The Asgard kernel of analysis.ipynb is not encrypted: other users on gpu01 can read its output.'
    );
    assert.ok(alerts[0].message.length <= 140, 'Notification truncates longer messages');
    const details = alerts[0].details?.paragraphs.join('\n') ?? '';
    assert.match(details, /any user logged in there can subscribe to its output/);
    assert.ok(details.includes(`add ${CURVE_METADATA} to the "metadata" of the kernelspec asgard-pytorch's`));
    assert.match(details, /the image cannot encrypt \(its pyzmq has no CurveZMQ/);
    assert.match(details, /the site turned encryption off/);
    assert.ok(details.includes(REQUIRE_ENCRYPTION));
    // once per kernel, also when it comes back on another job
    assert.deepEqual(alertsFor([{ ...clear, job_id: '43' }], new Set(['k1:clear-traffic'])), []);
  });

  test('no warning for an encrypted kernel, nor before the kernel has started', () => {
    for (const encryption of ['curve', 'curve-proxy', '']) {
      assert.deepEqual(alertsFor([row({ encryption })], new Set()), [], encryption);
    }
  });
});

group('SentAlerts', () => {
  test('what a page sent, the next page of the tab knows', () => {
    const tab = memoryStore();
    const first = new SentAlerts(tab);
    first.add('k1:clear-traffic');
    assert.ok(first.has('k1:clear-traffic'));
    const reloaded = new SentAlerts(tab);
    assert.ok(reloaded.has('k1:clear-traffic'));
    assert.ok(!reloaded.has('k2:clear-traffic'));
    assert.deepEqual(alertsFor([row({ encryption: 'none' })], reloaded), []);
    assert.ok(!new SentAlerts(memoryStore()).has('k1:clear-traffic'), 'another tab starts afresh');
  });

  test('without storage, or with storage that refuses or holds garbage, the page still remembers', () => {
    const refusing = {
      getItem: () => 'not json',
      setItem: () => {
        throw new Error('QuotaExceededError');
      }
    };
    for (const sent of [new SentAlerts(null), new SentAlerts(refusing)]) {
      assert.ok(!sent.has('k1:ended'));
      sent.add('k1:ended');
      assert.ok(sent.has('k1:ended'));
    }
    const tab = memoryStore();
    tab.setItem('jupyter-asgard:sent-alerts', '{"k1": 1}');
    assert.ok(!new SentAlerts(tab).has('k1'));
  });
});

group('encryptionWords', () => {
  test('each way a kernel’s traffic goes, and nothing before it has started', () => {
    assert.equal(encryptionWords('curve'), 'encrypted (CurveZMQ)');
    assert.equal(encryptionWords('curve-proxy'), 'encrypted (CurveZMQ, through a proxy in the container)');
    assert.equal(encryptionWords('none'), 'not encrypted');
    assert.equal(encryptionWords(''), '');
  });
});

group('expectedWords', () => {
  test('Slurm’s expected start of a queued kernel, in the state words too', () => {
    const queued = row({ state: 'PENDING', reason: 'Resources', queue_position: 0, node: '' });
    const at = (expected_start: string, seconds: number | null) => ({
      ...queued,
      expected_start,
      expected_start_seconds: seconds
    });
    assert.equal(expectedWords(at('2026-11-30T14:35:00', 45 * 60)), 'expected 14:35 (in ~45m)');
    assert.equal(expectedWords(at('2026-12-02T09:10:00', 26 * 3600)), 'expected 12-02 09:10 (in ~1d2h)');
    assert.equal(expectedWords(at('2026-11-30T13:50:00', 0)), 'expected any moment');
    assert.equal(expectedWords(at('', null)), UNKNOWN_START);
    assert.equal(
      stateWords(at('2026-11-30T14:35:00', 45 * 60)),
      'queued: waiting for GPUs (Resources), next in line, expected 14:35 (in ~45m)'
    );
    assert.equal(stateWords(queued), 'queued: waiting for GPUs (Resources), next in line, start time unknown to Slurm');
  });
});

group('phaseWords', () => {
  test('a starting kernel names the container setup Pyxis reports, with its time so far', () => {
    const starting = row({ execution_state: 'starting', phase: 'creating container filesystem', phase_seconds: 12 });
    assert.equal(stateWords(starting), 'starting: creating container filesystem (12s)');
    assert.equal(stateWords({ ...starting, phase: '' }), 'starting');
    assert.equal(stateWords({ ...starting, execution_state: 'idle' }), 'running');
  });
});

group('idle kernels and the culler', () => {
  test('the idle time, and when the server shuts the kernel down if it stays idle', () => {
    assert.equal(
      idleWords(row({ idle_seconds: 720, cull_in_seconds: 2880 })),
      '12m, shut down in 48m if it stays idle'
    );
    assert.equal(idleWords(row({ idle_seconds: 720 })), '12m');
    assert.equal(idleWords(row()), '');
  });

  test('a warning once, a few minutes before the culler shuts an idle kernel down', () => {
    const soon = row({ idle_seconds: 3420, cull_in_seconds: 180 });
    const alerts = alertsFor([soon], new Set());
    assert.deepEqual(
      alerts.map(alert => alert.key),
      ['k1:42:cull']
    );
    assert.equal(
      alerts[0].message,
      'The Asgard kernel of analysis.ipynb: idle for 57m; the server shuts it down in 3m and releases its GPUs. ' +
        'Run a cell to keep it.'
    );
    assert.deepEqual(alertsFor([soon], new Set(['k1:42:cull'])), []);
    assert.deepEqual(alertsFor([row({ idle_seconds: 60, cull_in_seconds: 3540 })], new Set()), []);
  });
});
