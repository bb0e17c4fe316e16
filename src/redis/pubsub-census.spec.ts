import { describe, expect, it } from 'vitest';

import { clusterMembers } from './pubsub-census.js';

describe('clusterMembers', () => {
  it('lists every node with an address that has not failed, replicas and empty masters included', () => {
    const nodes = [
      'a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460',
      'b2 127.0.0.1:7002@17002,redis-b.local master - 0 1 2 connected 5461-10922',
      'c3 10.0.0.3:7003@17003 slave a1 0 1 3 connected',
      'd4 ::1:7004@17004 master - 0 1 4 connected',
      'e5 127.0.0.1:7005@17005 master,fail - 0 1 5 disconnected',
      'f6 127.0.0.1:7006@17006 slave,fail? b2 0 1 6 connected',
      'g7 :0@0 master,noaddr - 0 1 7 disconnected',
      'h8 127.0.0.1:7008@17008 handshake - 0 0 0 connected',
      '',
    ].join('\n');
    expect(clusterMembers(nodes)).toEqual([
      { address: '127.0.0.1:7001', host: '127.0.0.1', port: 7001 },
      { address: '127.0.0.1:7002', host: '127.0.0.1', port: 7002 },
      { address: '10.0.0.3:7003', host: '10.0.0.3', port: 7003 },
      { address: '::1:7004', host: '::1', port: 7004 },
      // Suspected (fail?) by one node only: still asked.
      { address: '127.0.0.1:7006', host: '127.0.0.1', port: 7006 },
    ]);
  });
});
