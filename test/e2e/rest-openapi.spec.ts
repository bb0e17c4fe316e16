import { randomUUID } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { ConversationsService } from '../../src/conversations/conversations.service.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { mintToken } from '../support/clients.js';

/** Every route of PROTOCOL.md section 4, as OpenAPI writes paths. */
const CONTRACT_ROUTES = [
  'post /v1/conversations',
  'get /v1/conversations',
  'get /v1/conversations/{id}',
  'post /v1/conversations/{id}/members',
  'delete /v1/conversations/{id}/members/{userId}',
  'post /v1/conversations/{id}/messages',
  'get /v1/conversations/{id}/messages',
  'post /v1/conversations/{id}/read',
  'put /v1/devices/{deviceId}',
  'delete /v1/devices/{deviceId}',
  'get /v1/users/{userId}/devices/keys',
  'get /v1/push/web-push-key',
];

interface Operation {
  parameters?: { name: string; in: string }[];
  requestBody?: { content: Record<string, { schema: { properties?: Record<string, unknown>; required?: string[] } }> };
  responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
  security?: Record<string, unknown>[];
}
interface OpenApiDocument {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { securitySchemes: Record<string, { type: string; scheme: string }>; schemas: Record<string, unknown> };
}

describe('REST OpenAPI document, errors and metrics', () => {
  let service: TestApp;
  let doc: OpenApiDocument;

  beforeAll(async () => {
    // The 500 test's failure is logged at error level; keep the run's output clean.
    service = await startTestApp({ LOG_LEVEL: 'fatal' });
    const response = await fetch(`${service.url}/docs-json`);
    expect(response.status).toBe(200);
    doc = (await response.json()) as OpenApiDocument;
  });

  afterAll(async () => {
    await service.close();
  });

  describe('OpenAPI', () => {
    it('lists exactly the routes of the contract, each behind bearer auth', () => {
      expect(doc.openapi).toMatch(/^3\./);
      const routes = Object.entries(doc.paths).flatMap(([path, operations]) =>
        Object.keys(operations).map((method) => `${method} ${path}`),
      );
      expect(routes.sort()).toEqual([...CONTRACT_ROUTES].sort());
      expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
      for (const route of CONTRACT_ROUTES) {
        const [method, path] = route.split(' ');
        const operation = doc.paths[path][method];
        expect(operation.security, route).toEqual([{ bearer: [] }]);
        expect(Object.keys(operation.responses), route).toEqual(expect.arrayContaining(['401', '500', '503']));
      }
    });

    it('documents requests and replies from the schemas the handlers validate with', () => {
      const create = doc.paths['/v1/conversations'].post;
      const body = create.requestBody!.content['application/json'].schema;
      expect(Object.keys(body.properties!)).toEqual(['kind', 'memberIds', 'title', 'encryption', 'userId']);
      expect(body.required).toEqual(['kind', 'memberIds']);
      expect(Object.keys(create.responses)).toEqual(expect.arrayContaining(['200', '201', '400']));
      expect(doc.components.schemas).toHaveProperty('Conversation');
      expect(doc.components.schemas).toHaveProperty('ErrorBody');

      const send = doc.paths['/v1/conversations/{id}/messages'].post;
      expect(Object.keys(send.requestBody!.content['application/json'].schema.properties!)).toEqual([
        'clientMsgId',
        'body',
        'ciphertext',
        'contentType',
        'recipientDevices',
        'senderId',
      ]);
      const params = (route: string, method: string) =>
        (doc.paths[route][method].parameters ?? []).map((p) => `${p.in}:${p.name}`);
      expect(params('/v1/conversations', 'get')).toEqual(['query:cursor', 'query:limit', 'query:userId']);
      expect(params('/v1/conversations/{id}/messages', 'get')).toEqual([
        'path:id',
        'query:beforeSeq',
        'query:afterSeq',
        'query:limit',
        'query:userId',
      ]);
      expect(params('/v1/devices/{deviceId}', 'delete')).toEqual(['path:deviceId', 'query:userId']);
      const register = doc.paths['/v1/devices/{deviceId}'].put.requestBody!.content['application/json'].schema;
      expect(Object.keys(register.properties!)).toEqual([
        'platform',
        'apnsToken',
        'apnsTopic',
        'apnsEnvironment',
        'fcmToken',
        'webPush',
        'publicKey',
        'userId',
      ]);
    });

    it('serves the UI at /docs', async () => {
      const response = await fetch(`${service.url}/docs`);
      expect(response.status).toBe(200);
      expect(await response.text()).toMatch(/swagger-ui/i);
    });
  });

  describe('errors', () => {
    it('answers an unknown route with 404 not_found and the request id', async () => {
      const response = await fetch(`${service.url}/v1/nothing-here`, { headers: { 'x-request-id': 'req-abc-1' } });
      expect(response.status).toBe(404);
      expect(await response.json()).toEqual({
        error: { code: 'not_found', message: expect.any(String), requestId: 'req-abc-1' },
      });
    });

    it('answers an unexpected failure with 500 internal and a request id, never its message', async () => {
      const spy = vi
        .spyOn(service.app.get(ConversationsService), 'listFor')
        .mockRejectedValueOnce(new Error('secret: table users has a password column'));
      try {
        const response = await fetch(`${service.url}/v1/conversations`, {
          headers: { authorization: `Bearer ${await mintToken('alice')}` },
        });
        expect(response.status).toBe(500);
        const text = await response.text();
        expect(text).not.toMatch(/secret|password/);
        const { error } = JSON.parse(text) as { error: { code: string; requestId: string } };
        expect(error).toMatchObject({ code: 'internal', message: 'internal error' });
        expect(error.requestId).toBe(response.headers.get('x-request-id'));
      } finally {
        spy.mockRestore();
      }
    });

    it('answers a dependency outage with 503 unavailable', async () => {
      const spy = vi
        .spyOn(service.app.get(ConversationsService), 'getFor')
        .mockRejectedValueOnce(new Error('connect ECONNREFUSED 127.0.0.1:5432'));
      try {
        const response = await fetch(`${service.url}/v1/conversations/${randomUUID()}`, {
          headers: { authorization: `Bearer ${await mintToken('alice')}` },
        });
        expect(response.status).toBe(503);
        expect(((await response.json()) as { error: { code: string } }).error.code).toBe('unavailable');
      } finally {
        spy.mockRestore();
      }
    });
  });

  it('counts and times requests by route pattern, not raw URL', async () => {
    const token = await mintToken('metrics-user');
    const id = randomUUID();
    await fetch(`${service.url}/v1/conversations/${id}`, { headers: { authorization: `Bearer ${token}` } });
    await fetch(`${service.url}/v1/conversations/${id}/messages`, { headers: { authorization: `Bearer ${token}` } });
    const metrics = await (await fetch(`${service.url}/metrics`)).text();
    expect(metrics).toMatch(/http_requests_total\{method="GET",route="\/v1\/conversations\/:id",status="404"\} \d+/);
    expect(metrics).toMatch(
      /http_request_duration_seconds_count\{method="GET",route="\/v1\/conversations\/:id\/messages",status="404"\} \d+/,
    );
    expect(metrics).not.toContain(id);
    expect(metrics).toMatch(/errors_total\{code="not_found",transport="http"\} \d+/);
  });
});
