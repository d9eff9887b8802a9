// Unit tests of cells whose reply went to a server that has gone: the outputs a waiting cell missed (without what
// its tab already got), which cells of a notebook are finished, and when the server is asked (node --test).
import { strict as assert } from 'node:assert';
import { describe as group, test } from 'node:test';

import type { IKernelDetail, IUnanswered, IWhileDetachedEntry } from '../src/api';
import {
  CellOutput,
  codeCellsOf,
  finishCells,
  ICodeCellLike,
  missingOutputs,
  restoredOutputs,
  UnansweredCells,
  waitingSince
} from '../src/detachedcells';
import { row } from './fixtures';

const T = 1_800_000_000;

function out(text: string, cell = 'm1', name = 'stdout'): IWhileDetachedEntry {
  return { kind: 'stream', name, text, time: T, cell };
}

function stream(text: string, name = 'stdout'): CellOutput {
  return { output_type: 'stream', name, text };
}

group('missingOutputs', () => {
  test('what the cell shows already is not added again, what came after it is', () => {
    const shown = [stream('tick 0\ntick 1\ntick 2\n')];
    const recorded = [out('tick 1\n'), out('tick 2\n'), out('tick 3\n'), out('tick 4\n')];
    assert.deepEqual(missingOutputs(shown, recorded, 3), [stream('tick 3\n'), stream('tick 4\n')]);
  });

  test('a record that starts after the cell’s text is added whole; streams are cut each by its own text', () => {
    assert.deepEqual(missingOutputs([stream('a\n')], [out('b\n')], 1), [stream('b\n')]);
    const shown = [stream('x\n'), stream('warn\n', 'stderr')];
    const recorded = [out('warn\n', 'm1', 'stderr'), out('x\ny\n'), out('later\n', 'm1', 'stderr')];
    assert.deepEqual(missingOutputs(shown, recorded, 1), [stream('y\n'), stream('later\n', 'stderr')]);
  });

  test('a result and an error become outputs of their kinds, once', () => {
    const recorded: IWhileDetachedEntry[] = [
      { kind: 'result', text: '42', time: T, cell: 'm1' },
      { kind: 'error', text: "NameError: name 'y' is not defined", time: T, cell: 'm1' }
    ];
    const error: CellOutput = {
      output_type: 'error',
      ename: 'NameError',
      evalue: "name 'y' is not defined",
      traceback: ["NameError: name 'y' is not defined"]
    };
    const result: CellOutput = {
      output_type: 'execute_result',
      execution_count: 5,
      data: { 'text/plain': '42' },
      metadata: {}
    };
    assert.deepEqual(missingOutputs([], recorded, 5), [result, error]);
    assert.deepEqual(missingOutputs([result], recorded, 5), [error]);
  });
});

interface IFakeCell extends ICodeCellLike {
  disposed: boolean;
  shown: CellOutput[];
}

function cell(msgId: string | null, shown: CellOutput[] = [], disposed = false, sent = T - 60): IFakeCell {
  const fake: IFakeCell = {
    disposed,
    shown: [...shown],
    model: {
      outputs: {
        get length() {
          return fake.shown.length;
        },
        get: index => ({ toJSON: () => fake.shown[index] }),
        set: (index, output) => {
          fake.shown[index] = output;
        },
        add: output => fake.shown.push(output)
      },
      executionCount: null
    },
    outputArea: {
      future: msgId
        ? {
            msg: { header: { msg_id: msgId, date: new Date(sent * 1000).toISOString() } },
            get isDisposed() {
              return fake.disposed;
            },
            dispose: () => {
              fake.disposed = true;
            }
          }
        : null
    }
  };
  return fake;
}

const TAKEN_OVER = T + 10;

function request(cell: string, count: number, outputs: IWhileDetachedEntry[] = [], complete = true): IUnanswered {
  return { cell, count, status: 'ok', time: T, sent: new Date((T - 60) * 1000).toISOString(), outputs, complete };
}

group('restoredOutputs', () => {
  const ticks = [0, 1, 2, 3, 4].map(tick => out(`tick ${tick}\n`));

  test('with the whole record, a stream shown as one output gets the record’s whole text', () => {
    // the tab got ticks 0-1 before its server went and 4 after it reconnected
    const restored = restoredOutputs([stream('tick 0\ntick 1\ntick 4\n')], ticks, 3, true);
    assert.deepEqual(restored, { set: [[0, stream('tick 0\ntick 1\ntick 2\ntick 3\ntick 4\n')]], add: [] });
    assert.deepEqual(restoredOutputs([], ticks, 3, true).add, [stream('tick 0\ntick 1\ntick 2\ntick 3\ntick 4\n')]);
  });

  test('rich outputs the cell shows stay; a result not shown is added', () => {
    const figure = {
      output_type: 'display_data',
      data: { 'image/png': 'iVBOR' },
      metadata: {}
    } as unknown as CellOutput;
    const entries: IWhileDetachedEntry[] = [...ticks.slice(0, 2), { kind: 'result', text: '42', time: T, cell: 'm1' }];
    const restored = restoredOutputs([stream('tick 0\n'), figure], entries, 3, true);
    assert.deepEqual(restored.set, [[0, stream('tick 0\ntick 1\n')]]);
    assert.deepEqual(restored.add, [
      { output_type: 'execute_result', execution_count: 3, data: { 'text/plain': '42' }, metadata: {} }
    ]);
  });

  test('without the whole record, or with a stream shown in pieces, what is missing is added', () => {
    assert.deepEqual(restoredOutputs([stream('tick 1\n')], ticks.slice(1, 3), 3, false), {
      set: [],
      add: [stream('tick 2\n')]
    });
    const pieces = [stream('tick 0\n'), stream('warn\n', 'stderr'), stream('tick 1\n')];
    assert.deepEqual(restoredOutputs(pieces, ticks.slice(0, 3), 3, true), { set: [], add: [stream('tick 2\n')] });
  });
});

group('finishCells', () => {
  test('a cell waiting for an unanswered request gets its outputs put right, its wait ended, then its count', () => {
    const waiting = cell('m1', [stream('tick 0\n')]);
    const later: (() => void)[] = [];
    const finished = finishCells([waiting], [request('m1', 7, [out('tick 0\n'), out('tick 1\n')])], then => {
      later.push(then);
    });
    assert.deepEqual(finished, ['m1']);
    assert.deepEqual(waiting.shown, [stream('tick 0\ntick 1\n')]);
    assert.ok(waiting.disposed);
    assert.equal(waiting.model.executionCount, null); // JupyterLab handles the ended wait first
    later.forEach(then => then());
    assert.equal(waiting.model.executionCount, 7);
  });

  test('cells waiting for other requests, finished ones and cells without a request are left alone', () => {
    const others = [cell('m2'), cell('m1', [], true), cell(null)];
    const finished = finishCells(others, [request('m1', 7, [out('x')])], () => {
      assert.fail('nothing to finish');
    });
    assert.deepEqual(finished, []);
    assert.deepEqual(
      others.map(other => [other.disposed, other.shown.length]),
      [
        [false, 0],
        [true, 0],
        [false, 0]
      ]
    );
  });

  test('a notebook panel’s code cells are those with an output area', () => {
    const code = cell('m1');
    assert.deepEqual(codeCellsOf({ content: { widgets: [code, { model: {} }] } }), [code]);
    assert.deepEqual(codeCellsOf({}), []);
    assert.deepEqual(codeCellsOf(null), []);
  });
});

group('UnansweredCells', () => {
  test('only cells sent before the take-over wait for good', () => {
    const before = cell('m1');
    const after = cell('m2', [], false, TAKEN_OVER + 1);
    assert.deepEqual(waitingSince([before, after, cell('m3', [], true), cell(null)], TAKEN_OVER), [before]);
  });

  test('the server is asked for a taken-over kernel with such cells, at most every `every` ms, and they are finished', async () => {
    const asked: string[] = [];
    const waiting = cell('m1');
    const api = {
      kernel: (kernelId: string): Promise<IKernelDetail> => {
        asked.push(kernelId);
        return Promise.resolve({
          ...row({ kernel_id: kernelId }),
          while_detached: [],
          unanswered: asked.length > 1 ? [request('m1', 3)] : []
        });
      }
    };
    const cells = new UnansweredCells(api, kernelId => (kernelId === 'k1' ? [waiting] : [cell('m9')]), 5000);
    const rows = [row({ kernel_id: 'k1', taken_over_at: TAKEN_OVER }), row({ kernel_id: 'k2', taken_over_at: null })];
    await cells.check(rows, 1000);
    assert.deepEqual([asked, waiting.disposed], [['k1'], false]); // still running
    await cells.check(rows, 3000);
    assert.deepEqual(asked, ['k1']);
    await cells.check(rows, 6000);
    assert.deepEqual([asked, waiting.disposed], [['k1', 'k1'], true]);
    await cells.check(rows, 20000);
    assert.equal(asked.length, 2); // nothing waits any more
  });
});
