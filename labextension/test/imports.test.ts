// Unit tests of image imports in words: running or not, the layers' progress bar, the row's tooltip, which
// imports ended since the last listing and how that is told, and a listing with a new import (node --test).
import { strict as assert } from 'node:assert';
import { describe as group, test } from 'node:test';

import {
  endedWords,
  importTitle,
  isRunning,
  justEnded,
  layersOf,
  layerWords,
  URI_PLACEHOLDER,
  withImport
} from '../src/imports';
import { imageImport } from './fixtures';

group('isRunning', () => {
  test('queued and importing run; imported, failed and cancelled have ended', () => {
    assert.deepEqual(
      (['queued', 'importing', 'imported', 'failed', 'cancelled'] as const).map(state =>
        isRunning(imageImport({ state }))
      ),
      [true, true, false, false, false]
    );
  });
});

group('layersOf', () => {
  test('an importing import’s layers, for the progress bar', () => {
    assert.deepEqual(layersOf(imageImport()), { done: 2, total: 5 });
    assert.equal(layerWords({ done: 2, total: 5 }), '2 of 5 layers');
    assert.equal(layerWords({ done: 0, total: 1 }), '0 of 1 layer');
  });

  test('no bar while the number of layers is unknown, in the queue, or once ended', () => {
    const unknown = { phase: '', layers_done: 0, layers_total: 0, digest: '' };
    assert.equal(layersOf(imageImport({ progress: unknown })), null);
    assert.equal(layersOf(imageImport({ state: 'queued' })), null);
    assert.equal(layersOf(imageImport({ state: 'imported' })), null);
  });

  test('never more done than there are', () => {
    const progress = { phase: 'downloading layers', layers_done: 7, layers_total: 5, digest: '' };
    assert.deepEqual(layersOf(imageImport({ progress })), { done: 5, total: 5 });
  });
});

group('importTitle', () => {
  test('the URI, where it goes, its job and digest, each on a line', () => {
    assert.equal(
      importTitle(imageImport()),
      'docker://nvcr.io#nvidia/pytorch:24.05-py3\n' +
        'into /netscratch/ada/images/nvcr.io_nvidia_pytorch_24.05-py3.sqsh\nSlurm job 12\ndigest sha256:ab12'
    );
    const early = imageImport({ job_id: '', progress: { phase: '', layers_done: 0, layers_total: 0, digest: '' } });
    assert.equal(importTitle(early).split('\n').length, 2);
  });
});

group('justEnded and endedWords', () => {
  test('only imports that ran before and have ended now, once', () => {
    const running = imageImport();
    const other = imageImport({ id: 'other', state: 'failed', message: 'no such tag' });
    const imported = imageImport({ state: 'imported', status: 'imported as /x.sqsh' });
    assert.deepEqual(justEnded([running, other], [imported, other]), [imported]);
    assert.deepEqual(justEnded([imported, other], [imported, other]), []);
    assert.deepEqual(justEnded([], [imported]), [], 'one that ended before this page saw it run is not news');
  });

  test('each end in one sentence, in the server’s words', () => {
    assert.equal(
      endedWords(imageImport({ state: 'imported' })),
      'Imported docker://nvcr.io#nvidia/pytorch:24.05-py3 as ' +
        '/netscratch/ada/images/nvcr.io_nvidia_pytorch_24.05-py3.sqsh: it is in your image list now.'
    );
    assert.equal(
      endedWords(imageImport({ state: 'failed', message: 'the registry has no tag 24.05-py3' })),
      'The import of docker://nvcr.io#nvidia/pytorch:24.05-py3 failed: the registry has no tag 24.05-py3'
    );
    assert.match(endedWords(imageImport({ state: 'cancelled' })), /was cancelled\.$/);
    assert.equal(endedWords(imageImport()), '');
  });
});

group('withImport', () => {
  test('a new import is added at the end; a known one replaced in place', () => {
    const first = imageImport({ id: 'one' });
    const second = imageImport({ id: 'two' });
    assert.deepEqual(withImport([first], second), [first, second]);
    const cancelled = imageImport({ id: 'one', state: 'cancelled' });
    assert.deepEqual(withImport([first, second], cancelled), [cancelled, second]);
  });
});

test('the URI field’s example is an enroot URI', () => {
  assert.match(URI_PLACEHOLDER, /^docker:\/\/[^#]+#[^:]+:.+$/);
});
