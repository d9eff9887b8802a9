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

/** An API whose server answers every request with status and body, and the requests it got ("METHOD url"). */
function recording(status: number, body: string): { api: AsgardAPI; requests: string[] } {
  const requests: string[] = [];
  const fetch = (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const request = input instanceof Request ? input : new Request(input, init);
    // without the cache-busting number ServerConnection adds to each URL
    requests.push(`${request.method} ${request.url.replace(/[?&]\d+$/, '')}`);
    return Promise.resolve(new Response(body, { status }));
  };
  const settings = ServerConnection.makeSettings({ baseUrl: 'http://127.0.0.1:1/', wsUrl: 'ws://127.0.0.1:1/', fetch });
  return { api: new AsgardAPI(settings), requests };
}

test('a container is removed from the node named, its name and node escaped', async () => {
  const { api, requests } = recording(200, '{"removed": []}');
  await api.removeContainer('my env', 'gpu02');
  await api.removeContainer('my-env');
  assert.deepEqual(requests, [
    'DELETE http://127.0.0.1:1/asgard/api/containers/my%20env?node=gpu02',
    'DELETE http://127.0.0.1:1/asgard/api/containers/my-env'
  ]);
});

test('Bring it here answers the move as the server started it; a refusal in its words', async () => {
  const started = { state: 'saving', message: 'saving my-env on gpu02', from_node: 'gpu02' };
  const { api, requests } = recording(202, JSON.stringify({ container_move: started }));
  assert.deepEqual(await api.bringContainer('k 1'), started);
  assert.deepEqual(requests, ['POST http://127.0.0.1:1/asgard/api/kernels/k%201/container/bring']);
  const refused = JSON.stringify({ message: 'a move is under way', problems: ['a move is under way'] });
  await assert.rejects(recording(409, refused).api.bringContainer('k1'), {
    status: 409,
    message: 'a move is under way'
  });
});
