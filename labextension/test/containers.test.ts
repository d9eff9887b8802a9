// Unit tests of named containers in words: where a kernel's notice says its container is, the status bar's short
// form, "Bring it here" and how a move stands, and what the Containers section shows of each (node --test).
import { strict as assert } from 'node:assert';
import { describe as group, test } from 'node:test';

import type { IContainer, IContainerMove } from '../src/api';
import {
  bringQuestion,
  canBring,
  containerFields,
  kernelsWords,
  lastUseWords,
  moveUnderway,
  moveWords,
  removeQuestion,
  shortNotice,
  writableWords
} from '../src/containers';
import { row } from './fixtures';

// The server's words (site/placement.py): the container is on gpu02, which is busy; the kernel runs on gpu01.
const AWAY =
  'your container my-env, with what you installed, is on gpu02, which is busy (Slurm cannot tell until when): ' +
  'this kernel runs on gpu01 in a fresh copy of the image';
const WIPED =
  "your container my-env was no longer on gpu01 (it was removed from the node's storage): this kernel runs in a " +
  'fresh copy of the image, without what was installed in it';

// The row of a kernel away from its container: the notice, and the node the server names for Bring it here.
const AWAY_ROW = { container_notice: AWAY, container_home: 'gpu02' };

function move(state: IContainerMove['state'], message = ''): IContainerMove {
  return { state, message, from_node: 'gpu02' };
}

function container(changes: Partial<IContainer> = {}): IContainer {
  const place = {
    name: 'my-env',
    node: 'gpu02',
    image: '/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh',
    writable: true,
    partition: 'gpu',
    created: '2026-01-01T09:00:00+00:00',
    last_use: '2026-01-01T10:00:00+00:00'
  };
  return {
    name: 'my-env',
    nodes: ['gpu02'],
    image: place.image,
    writable: true,
    last_use: place.last_use,
    places: [place],
    kernels: [],
    ...changes
  };
}

group('shortNotice', () => {
  test('where the container is, with the whole notice as the tooltip', () => {
    assert.deepEqual(shortNotice(row({ ...AWAY_ROW })), {
      text: 'container on gpu02',
      title: `Y${AWAY.slice(1)}`
    });
  });

  test('a container made anew, and other words, still marked', () => {
    assert.equal(shortNotice(row({ container_notice: WIPED }))?.text, 'container made anew');
    assert.equal(canBring(row({ container_notice: WIPED })), false, 'nothing to bring: the container was lost');
    assert.equal(shortNotice(row({ container_notice: 'something new' }))?.text, 'container');
  });

  test('nothing for a kernel in its container, nor once the move is done', () => {
    assert.equal(shortNotice(row()), null);
    assert.equal(shortNotice(row({ container_move: move('done', 'my-env is on gpu01 now') })), null);
  });

  test('a move under way instead of the notice; a failed one after it', () => {
    const moving = shortNotice(row({ ...AWAY_ROW, container_move: move('saving', 'saving my-env on gpu02') }));
    assert.deepEqual(moving, {
      text: 'bringing container from gpu02',
      title: 'Bringing it here (1 of 2): saving my-env on gpu02…'
    });
    const failed = shortNotice(row({ ...AWAY_ROW, container_move: move('failed', 'no room on gpu02') }));
    assert.equal(failed?.text, 'container on gpu02');
    assert.ok(failed?.title.endsWith('\nNot brought here: no room on gpu02'), failed?.title);
  });
});

group('moves', () => {
  test('saving and restarting are under way; done and failed have ended; no move is none', () => {
    assert.deepEqual(
      (['saving', 'restarting', 'done', 'failed'] as const).map(state => moveUnderway(move(state))),
      [true, true, false, false]
    );
    assert.equal(moveUnderway(null), false);
  });

  test('Bring it here is offered while the kernel runs away from its container and no move runs', () => {
    assert.equal(canBring(row({ ...AWAY_ROW })), true);
    assert.equal(canBring(row({ ...AWAY_ROW, container_move: move('restarting') })), false);
    assert.equal(canBring(row({ ...AWAY_ROW, container_move: move('failed') })), true, 'try again');
    assert.equal(canBring(row({ container_move: move('done') })), false);
    assert.equal(canBring(row()), false);
  });

  test('each state in words: the server’s message, or what the state means without one', () => {
    assert.equal(
      moveWords(move('restarting', 'restarting the kernel on gpu01 with the copy')),
      'Bringing it here (2 of 2): restarting the kernel on gpu01 with the copy…'
    );
    assert.equal(
      moveWords(move('done', 'my-env is on gpu01 now, with what was installed in it on gpu02')),
      'Brought here: my-env is on gpu01 now, with what was installed in it on gpu02'
    );
    assert.equal(
      moveWords(move('failed', 'saving my-env on gpu02 failed: x')),
      'Not brought here: saving my-env on gpu02 failed: x'
    );
    assert.equal(moveWords(move('saving')), 'Bringing it here (1 of 2): saving the container on gpu02…');
    assert.equal(moveWords(move('failed')), 'Not brought here: the server did not say why');
  });

  test('the question says the kernel restarts, what is lost and what comes along', () => {
    const question = bringQuestion(row({ container: 'my-env', ...AWAY_ROW }));
    assert.equal(
      question,
      'Your container my-env is saved on gpu02, and the kernel of analysis.ipynb restarts on gpu01 in a copy of ' +
        "it: what was installed in it comes along. What is in the kernel's memory (variables, imports, a cell " +
        'still running) is lost.'
    );
  });
});

group('the Containers section', () => {
  test('each field of a container, its kernels named by their notebooks', () => {
    const rows = [row({ kernel_id: 'k1', path: 'work/train.ipynb', node: 'gpu02' })];
    const shown = container({
      nodes: ['gpu02', 'gpu01'],
      kernels: [
        { kernel_id: 'k1', node: 'gpu02' },
        { kernel_id: '0a1b2c3d4e5f', node: 'gpu01' }
      ]
    });
    const at = new Date(2026, 0, 1, 12, 0);
    const fields = containerFields({ ...shown, last_use: at.toISOString() }, rows, at);
    assert.deepEqual(fields, [
      ['Nodes', 'gpu02, gpu01'],
      ['Image', 'nvcr.io_nvidia_pytorch_23.12-py3'],
      ['Filesystem', 'writable'],
      ['Last use', 'today 12:00'],
      ['Kernels', 'train.ipynb on gpu02, kernel 0a1b2c3d on gpu01']
    ]);
    assert.equal(kernelsWords(container(), rows), 'none');
  });

  test('the filesystem as Pyxis mounts it', () => {
    assert.deepEqual([true, false, null].map(writableWords), ['writable', 'read-only', "Pyxis's default"]);
  });

  test('the last use: today’s time, an earlier day with its date, none unknown', () => {
    const now = new Date(2026, 0, 31, 9, 30);
    assert.equal(lastUseWords(new Date(2026, 0, 30, 14, 5).toISOString(), now), '2026-01-30 14:05');
    assert.equal(lastUseWords('', now), '—');
    assert.equal(lastUseWords('not a time', now), '—');
  });

  test('Remove says what it deletes, and on which node', () => {
    assert.equal(
      removeQuestion(container(), 'gpu02'),
      "The container my-env is deleted from gpu02's storage, with everything that was installed in it there. A " +
        'kernel that uses it on gpu02 next starts from a fresh copy of its image ' +
        '(/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh). This cannot be undone.'
    );
  });
});
