// Unit tests of the API client's refusals: the server's words, or the HTTP status where it has none (node --test).
import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { ServerConnection } from '@jupyterlab/services';

import { AsgardAPI, AsgardAPIError } from '../src/api';

/** An API whose server answers every request with this status and body. */
function answering(status: number, statusText: string, body: string): AsgardAPI {
  const fetch = (): Promise<Response> => Promise.resolve(new Response(body, { status, statusText }));
  return new AsgardAPI(
    ServerConnection.makeSettings({ baseUrl: 'http://127.0.0.1:1/', wsUrl: 'ws://127.0.0.1:1/', fetch })
  );
}

async function refusal(api: AsgardAPI): Promise<AsgardAPIError> {
  try {
    await api.imageImports();
  } catch (error) {
    assert.ok(error instanceof AsgardAPIError);
    return error;
  }
  throw new Error('no refusal');
}

test('a refusal in the server’s words: its message and hint', async () => {
  const body = JSON.stringify({ message: 'an image /x.sqsh exists already', hint: 'choose another name' });
  const error = await refusal(answering(409, 'Conflict', body));
  assert.deepEqual(
    [error.status, error.message, error.hint],
    [409, 'an image /x.sqsh exists already', 'choose another name']
  );
});

test('an HTML page (a server without this API) is no message: the status says what happened', async () => {
  const error = await refusal(
    answering(404, 'Not Found', '<!DOCTYPE HTML>\n<html><head><title>Jupyter Server</title>')
  );
  assert.deepEqual([error.status, error.message, error.hint], [404, 'Not Found', '']);
});

test('a plain-text answer is the message', async () => {
  const error = await refusal(answering(502, 'Bad Gateway', 'upstream closed the connection'));
  assert.equal(error.message, 'upstream closed the connection');
});
