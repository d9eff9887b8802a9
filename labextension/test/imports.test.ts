// Unit tests of image imports in words: running or not, the progress bar (layers, squashfs), the row's tooltip, which
// imports ended since the last listing and how that is told, and a listing with a new import (node --test).
import { strict as assert } from 'node:assert';
import { describe as group, test } from 'node:test';

import {
  endedWords,
  importTitle,
  isRunning,
  justEnded,
  layerWords,
  progressBar,
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

group('progressBar', () => {
  test('the layers fetched while enroot downloads them', () => {
    assert.deepEqual(progressBar(imageImport()), { value: 2, max: 5, words: '2 of 5 layers' });
    assert.equal(layerWords(0, 1), '0 of 1 layer');
  });

  test('mksquashfs’s percentage while it makes the image', () => {
    const progress = { phase: 'squashfs', layers_done: 5, layers_total: 5, percent: 40, digest: '' };
    assert.deepEqual(progressBar(imageImport({ progress })), { value: 40, max: 100, words: 'squashfs 40%' });
    const unknown = { ...progress, percent: null };
    assert.deepEqual(progressBar(imageImport({ progress: unknown })), { value: 5, max: 5, words: '5 of 5 layers' });
  });

  test('no bar while nothing is counted yet, in the queue, or once ended', () => {
    const nothing = { phase: 'manifest', layers_done: 0, layers_total: 0, percent: null, digest: '' };
    assert.equal(progressBar(imageImport({ progress: nothing })), null);
    assert.equal(progressBar(imageImport({ state: 'queued' })), null);
    assert.equal(progressBar(imageImport({ state: 'imported' })), null);
  });

  test('never more done than there are', () => {
    const progress = { phase: 'downloading', layers_done: 7, layers_total: 5, percent: null, digest: '' };
    assert.deepEqual(progressBar(imageImport({ progress })), { value: 5, max: 5, words: '5 of 5 layers' });
  });
});

group('importTitle', () => {
  test('the URI, where it goes, its job and digest, each on a line', () => {
    assert.equal(
      importTitle(imageImport()),
      'docker://nvcr.io#nvidia/pytorch:24.05-py3\n' +
        'into /netscratch/ada/images/nvcr.io_nvidia_pytorch_24.05-py3.sqsh\nSlurm job 12\ndigest sha256:ab12'
    );
    const early = imageImport({
      job_id: '',
      progress: { phase: '', layers_done: 0, layers_total: 0, percent: null, digest: '' }
    });
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
