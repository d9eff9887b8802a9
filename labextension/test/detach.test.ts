// Unit tests of detachable kernels in words: what a kernel printed while detached, the found and ended kernels
// of the panel's section, which details to fetch, and which ended kernels the user dismissed (node --test).
import { strict as assert } from 'node:assert';
import { describe as group, test } from 'node:test';

import type { IEndedKernel, IFoundKernel, IWhileDetachedEntry } from '../src/api';
import { AsgardAPIError, problemOf } from '../src/api';
import {
  clock,
  detachedName,
  detailsDue,
  DismissedKernels,
  endedLine,
  ERROR_MARK,
  foundDetails,
  foundTooltip,
  IDetailFetch,
  MAX_SHOWN_CHARS,
  omittedWords,
  releaseQuestion,
  shownOutput,
  terminalText,
  whileDetachedTitle
} from '../src/detach';
import { memoryStore, row } from './fixtures';

const T = 1_800_000_000; // an epoch second

function out(text: string, time = T, name = 'stdout'): IWhileDetachedEntry {
  return { kind: 'stream', name, text, time };
}

function found(changes: Partial<IFoundKernel> = {}): IFoundKernel {
  return {
    kernel_id: '0a1b2c3d-4e5f',
    kernel_name: 'asgard-detachable',
    job_id: '77',
    node: 'gpu02',
    path: 'work/train.ipynb',
    held_by: 'login1',
    hub_server: null,
    why: 'another Jupyter server of yours holds it (on login1)',
    ...changes
  };
}

group('shownOutput', () => {
  test('a stream’s chunks make one text; results and errors stand on lines of their own, errors marked', () => {
    const shown = shownOutput([
      out('tick 0\n'),
      out('tick 1\n'),
      { kind: 'result', text: '42', time: T },
      out('warn\n', T, 'stderr'),
      { kind: 'error', text: "NameError: name 'y' is not defined", time: T },
      out('after')
    ]);
    assert.deepEqual(shown, {
      parts: [
        { kind: 'stream', text: 'tick 0\ntick 1\n' },
        { kind: 'result', text: '42\n' },
        { kind: 'stream', text: 'warn\n' },
        { kind: 'error', text: `${ERROR_MARK}NameError: name 'y' is not defined\n` },
        { kind: 'stream', text: 'after' }
      ],
      omitted: 0
    });
  });

  test('only the newest characters, the oldest part cut to its end, and how many were left out', () => {
    const entries = [
      out('a'.repeat(30) + '\n'),
      { kind: 'error' as const, text: 'E: x', time: T },
      out('b'.repeat(10))
    ];
    const shown = shownOutput(entries, 20);
    const text = shown.parts.map(part => part.text).join('');
    assert.equal(text.length, 20);
    assert.ok(text.endsWith(`${ERROR_MARK}E: x\n${'b'.repeat(10)}`), text);
    assert.equal(shown.parts[0].kind, 'stream');
    assert.equal(shown.omitted, 31 + ERROR_MARK.length + 5 + 10 - 20);
    assert.equal(shownOutput([out('x'.repeat(MAX_SHOWN_CHARS + 5))]).omitted, 5);
    assert.deepEqual(shownOutput([out('abc')], 0), { parts: [], omitted: 3 });
  });

  test('progress bars show their last state, and colours no escapes', () => {
    const bar = [out('\r 10%|#   |'), out('\r 50%|##  |'), out('\r100%|####|\n'), out('\x1b[31mred\x1b[0m done\n')];
    assert.deepEqual(shownOutput(bar).parts, [{ kind: 'stream', text: '100%|####|\nred done\n' }]);
  });

  test('nothing printed, nothing shown', () => {
    assert.deepEqual(shownOutput([]), { parts: [], omitted: 0 });
    assert.deepEqual(shownOutput([out('\x1b[0m')]), { parts: [], omitted: 0 });
  });
});

group('terminalText', () => {
  test('what a terminal shows of carriage returns, CRLF line ends and escapes', () => {
    assert.equal(terminalText('a\r\nb\r\n'), 'a\nb\n');
    assert.equal(terminalText('1/3\r2/3\r3/3'), '3/3');
    assert.equal(terminalText('\x1b[1;32mok\x1b[0m \x1b]0;title\x07x'), 'ok x');
  });
});

group('whileDetachedTitle', () => {
  test('how many outputs, from when to when', () => {
    assert.equal(whileDetachedTitle([]), '');
    assert.equal(
      whileDetachedTitle([out('a', T)]),
      `What the kernel printed while no Jupyter server held it: 1 output, at ${clock(T)}`
    );
    assert.equal(
      whileDetachedTitle([out('a', T), out('b', T + 600)]),
      `What the kernel printed while no Jupyter server held it: 2 outputs, from ${clock(T)} to ${clock(T + 600)}`
    );
    assert.match(clock(T), /^\d\d:\d\d$/);
  });

  test('the note on what a bound left out', () => {
    assert.equal(omittedWords(0), '');
    assert.equal(omittedWords(1234), '… 1234 earlier characters not shown');
  });
});

group('found and ended kernels', () => {
  test('named by their notebook, else their kernelspec, else their id', () => {
    assert.equal(detachedName(found()), 'train.ipynb');
    assert.equal(detachedName(found({ path: '' })), 'asgard-detachable');
    assert.equal(detachedName(found({ path: '', kernel_name: '' })), 'kernel 0a1b2c3d');
    const ended: IEndedKernel = {
      kernel_id: 'e1e2e3e4e5',
      kernel_name: '',
      job_id: '9',
      path: '',
      why: 'it was released'
    };
    assert.equal(detachedName(ended), 'kernel e1e2e3e4');
    assert.equal(detachedName({ ...ended, kernel_name: 'asgard-detachable' }), 'asgard-detachable');
  });

  test('where a found kernel runs, with its kernelspec where its notebook names it', () => {
    assert.equal(foundDetails(found()), 'Slurm job 77 on gpu02, asgard-detachable');
    assert.equal(foundDetails(found({ path: '' })), 'Slurm job 77 on gpu02');
    assert.equal(foundDetails(found({ node: '' })), 'Slurm job 77, asgard-detachable');
    assert.equal(foundDetails(found({ job_id: '', path: '' })), '');
  });

  test('a found kernel’s tooltip: notebook, holder, and the JupyterHub server it belongs to', () => {
    assert.equal(foundTooltip(found()), 'work/train.ipynb\nheld by a Jupyter server on login1');
    assert.equal(
      foundTooltip(found({ held_by: '', hub_server: 'second' })),
      "work/train.ipynb\nstarted in your JupyterHub server 'second'"
    );
    assert.equal(
      foundTooltip(found({ path: '', held_by: '', hub_server: '' })),
      'started in your default JupyterHub server'
    );
  });

  test('an ended kernel says why, and Release says what it ends before it does', () => {
    const ended = { kernel_id: 'e1', kernel_name: 'k', job_id: '9', path: 'a.ipynb', why: 'time limit' };
    assert.equal(endedLine(ended), 'ended while detached: time limit');
    assert.equal(
      releaseQuestion(found()),
      'The detached kernel of train.ipynb ends, with everything in its memory (variables, a cell still ' +
        'running), and Slurm job 77 is cancelled. This cannot be undone.'
    );
    assert.match(releaseQuestion(found({ job_id: '' })), /and its Slurm job is cancelled/);
  });

  test('a refusal in the server’s words: its message and its hint', () => {
    const refusal = new AsgardAPIError(409, 'the detached kernel k cannot be taken over: held', 'stop it first');
    assert.deepEqual(problemOf(refusal), {
      message: 'the detached kernel k cannot be taken over: held',
      hint: 'stop it first'
    });
    assert.deepEqual(problemOf(new Error('Failed to fetch')), { message: 'Failed to fetch', hint: '' });
    assert.deepEqual(problemOf('odd'), { message: 'odd', hint: '' });
  });
});

group('detailsDue', () => {
  const detachable = [row({ kernel_id: 'a', detachable: true }), row({ kernel_id: 'b', detachable: true })];
  const rows = [
    ...detachable,
    row({ kernel_id: 'plain' }),
    row({ kernel_id: 'x', detachable: true, state: 'TIMEOUT' })
  ];
  const fetched = (entries: [string, IDetailFetch][]) => new Map(entries);

  test('a detachable kernel’s details once it appears, not a plain or ended kernel’s', () => {
    assert.deepEqual(detailsDue(rows, fetched([]), 100, 0, 10_000), ['a', 'b']);
    const both = fetched([
      ['a', { serverPid: 100, at: 0, ok: true }],
      ['b', { serverPid: 100, at: 0, ok: true }]
    ]);
    assert.deepEqual(detailsDue(rows, both, 100, 60_000, 10_000), []);
  });

  test('again under a new server process (it may have taken them over), and a failed fetch after a while', () => {
    const before = fetched([
      ['a', { serverPid: 100, at: 0, ok: true }],
      ['b', { serverPid: 101, at: 0, ok: true }]
    ]);
    assert.deepEqual(detailsDue(rows, before, 101, 1, 10_000), ['a']);
    const failed = fetched([
      ['a', { serverPid: 100, at: 5_000, ok: false }],
      ['b', { serverPid: 100, at: 0, ok: true }]
    ]);
    assert.deepEqual(detailsDue(rows, failed, 100, 14_999, 10_000), []);
    assert.deepEqual(detailsDue(rows, failed, 100, 15_000, 10_000), ['a']);
  });
});

group('DismissedKernels', () => {
  test('a dismissed ended kernel stays dismissed for its server process, in every page of the browser', () => {
    const browser = memoryStore();
    const first = new DismissedKernels(browser);
    first.add(100, 'e1');
    assert.ok(first.has(100, 'e1'));
    assert.ok(!first.has(100, 'e2'));
    assert.ok(!first.has(200, 'e1'), 'a later server that reports it again');
    assert.ok(new DismissedKernels(browser).has(100, 'e1'));
  });

  test('a new server process’s dismissals forget the old process’s', () => {
    const browser = memoryStore();
    const dismissed = new DismissedKernels(browser);
    dismissed.add(100, 'e1');
    dismissed.add(200, 'e2');
    assert.deepEqual(JSON.parse(browser.getItem('jupyter-asgard:dismissed-ended') ?? ''), ['200:e2']);
  });

  test('without storage the page still remembers', () => {
    const dismissed = new DismissedKernels(null);
    dismissed.add(1, 'e');
    assert.ok(dismissed.has(1, 'e'));
  });
});
