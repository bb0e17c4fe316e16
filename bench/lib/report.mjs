// The report: one row per figure with the bare relay beside it, the ratio, the target and
// PASS/MISS. Targets are shown, never asserted: the bench only reports.

const number = (value, digits = 0) =>
  value === null || value === undefined || Number.isNaN(value)
    ? '—'
    : value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function ratio(service, bare) {
  if (service === null || service === undefined || !bare) return '—';
  const value = service / bare;
  return `${number(value, Math.abs(value) < 10 ? 2 : Math.abs(value) < 100 ? 1 : 0)}×`;
}

const verdict = (ok) => (ok === null ? '' : ok ? 'PASS' : 'MISS');

/** Rows of the main table from the results of whatever scenarios ran. */
export function rowsOf(results) {
  const rows = [];
  // One figure: the service's value, the bare relay's (when it has one), the target.
  const row = ({ scenario = '', figure, service, bare = null, format, target = '', ok = null, compare = true }) =>
    rows.push({
      scenario,
      figure,
      service: format(service),
      bare: format(bare),
      ratio: compare ? ratio(service, bare) : '',
      target,
      result: verdict(ok),
    });
  const int = (value) => number(value);
  const ms = (value) => number(value, 2);
  const one = (value) => number(value, 1);
  const three = (value) => number(value, 3);
  const errors = (service, bare) => {
    if (service?.errors?.rateLimited > 0) {
      row({ figure: 'service: requests rate-limited, then retried', service: service.errors.rateLimited, format: int });
    }
    if ((service?.errors?.count ?? 0) + (bare?.errors?.count ?? 0) === 0) return;
    row({
      figure: 'errors and timeouts',
      service: service?.errors?.count,
      bare: bare?.errors?.count,
      format: int,
      target: '0',
      compare: false,
    });
  };
  const storeRows = (store) => {
    if (!store) return;
    const each = store.perMessage;
    row({ figure: 'service: PostgreSQL write transactions/msg', service: each.pgWriteTransactions, format: ms });
    row({ figure: 'service: WAL bytes/msg', service: each.pgWalBytes, format: int });
    row({ figure: 'service: Redis commands/msg', service: each.redisCommands, format: one });
  };

  // prom-client samples the loop every 10 ms: ~10 ms is an idle loop's figure, not a stall.
  const loopRow = (delay) => {
    if (!delay) return;
    row({
      figure: 'service: event-loop delay p99 ms (10 ms sampling)',
      service: delay.p99,
      format: one,
      compare: false,
    });
    row({ figure: 'service: event-loop delay max ms', service: delay.max, format: one, compare: false });
  };

  const handlerRows = (means, events) => {
    for (const event of events) {
      if (means?.[event] == null) continue;
      row({ figure: `service: ${event} handled in, mean ms (server side)`, service: means[event], format: ms });
    }
  };

  const c = results.connections;
  if (c) {
    const [s, b] = [c.service, c.bare];
    row({
      scenario: 'connections',
      figure: 'authenticated idle sockets open',
      service: s?.opened,
      bare: b?.opened,
      format: int,
      target: number(c.settings.count),
      ok: s?.opened == null ? null : s.opened >= c.settings.count,
      compare: false,
    });
    row({
      figure: 'connects/s',
      service: s?.connectsPerSecond,
      bare: b?.connectsPerSecond,
      format: int,
      target: '> 1,000/s',
      ok: s?.connectsPerSecond == null ? null : s.connectsPerSecond > 1000,
    });
    row({
      figure: 'reconnects/s (known devices)',
      service: s?.reconnectsPerSecond,
      bare: b?.reconnectsPerSecond,
      format: int,
      target: '> 1,000/s',
      ok: s?.reconnectsPerSecond == null ? null : s.reconnectsPerSecond > 1000,
    });
    row({
      figure: 'server RSS per connection, KB',
      service: s?.rssPerConnectionKiB,
      bare: b?.rssPerConnectionKiB,
      format: one,
      target: '< 20 KB',
      ok: s?.rssPerConnectionKiB == null ? null : s.rssPerConnectionKiB < 20,
    });
    errors(s, b);
  }

  const t = results.throughput;
  if (t) {
    const [s, b] = [t.service, t.bare];
    const service = s?.perSecond?.completed ?? null;
    const bare = b?.perSecond?.completed ?? null;
    row({
      scenario: 'throughput',
      figure: `msg/s stored+delivered+acked (${t.settings.pairs} pairs, window ${t.settings.window})`,
      service,
      bare,
      format: int,
      target: '≥ 0.5× bare',
      ok: service !== null && bare ? service >= 0.5 * bare : null,
    });
    row({
      figure: 'send → recipient ack done, p50 ms',
      service: s?.completionLatencyMs?.p50,
      bare: b?.completionLatencyMs?.p50,
      format: ms,
    });
    row({
      figure: 'send → recipient ack done, p99 ms',
      service: s?.completionLatencyMs?.p99,
      bare: b?.completionLatencyMs?.p99,
      format: ms,
    });
    row({
      figure: 'server CPU ms/msg',
      service: s?.serverCpuMsPerMessage,
      bare: b?.serverCpuMsPerMessage,
      format: three,
    });
    storeRows(s?.store);
    handlerRows(s?.cpu?.serverHandlerMeanMs, ['send', 'ack']);
    loopRow(s?.cpu?.serverLoopDelayMs);
    errors(s, b);
  }

  const l = results.latency;
  if (l) {
    const [s, b] = [l.service, l.bare];
    const p99 = s?.deliveryMs?.p99 ?? null;
    row({
      scenario: 'latency',
      figure: `p50 ms send → receipt, offered ${number(l.settings.ratePerSecond)} msg/s`,
      service: s?.deliveryMs?.p50,
      bare: b?.deliveryMs?.p50,
      format: ms,
    });
    row({ figure: 'p95 ms', service: s?.deliveryMs?.p95, bare: b?.deliveryMs?.p95, format: ms });
    row({
      figure: 'p99 ms',
      service: p99,
      bare: b?.deliveryMs?.p99,
      format: ms,
      target: '< 10 ms',
      ok: p99 === null ? null : p99 < 10,
    });
    loopRow(s?.cpu?.serverLoopDelayMs);
    row({ figure: 'sent msg/s', service: s?.achievedPerSecond, bare: b?.achievedPerSecond, format: int });
    row({
      figure: 'delivered msg/s during the run',
      service: s?.deliveredPerSecond,
      bare: b?.deliveredPerSecond,
      format: int,
    });
    errors(s, b);
  }

  const d = results.drain;
  if (d) {
    const s = d.service;
    row({
      scenario: 'drain',
      figure: `s from connect to empty queue (${number(d.settings.count)} msgs)`,
      service: s?.drainSeconds,
      format: three,
      target: '< 1 s',
      ok: s?.drainSeconds == null ? null : s.drainSeconds < 1,
      compare: false,
    });
    row({
      figure: `get-unacked + ack pages (maxBatch ${s?.maxBatch ?? '?'})`,
      service: s?.pages,
      format: int,
      compare: false,
    });
    row({
      figure: 'filling: msg/s stored, 1 sender, window 64',
      service: s?.fillPerSecond,
      format: int,
      compare: false,
    });
    handlerRows(s?.cpu?.serverHandlerMeanMs, ['get-unacked', 'ack']);
    errors(s, null);
  }

  const f = results.fanout;
  if (f) {
    const [s, b] = [f.service, f.bare];
    const service = s?.deliveriesPerSecond ?? null;
    const bare = b?.deliveriesPerSecond ?? null;
    row({
      scenario: 'fan-out',
      figure: `deliveries/s (1 → ${f.settings.members - 1} online, window ${f.settings.window})`,
      service,
      bare,
      format: int,
      target: '≥ 0.5× bare',
      ok: service !== null && bare ? service >= 0.5 * bare : null,
    });
    row({ figure: 'messages/s', service: s?.messagesPerSecond, bare: b?.messagesPerSecond, format: int });
    row({ figure: 'delivery p99 ms', service: s?.deliveryLatencyMs?.p99, bare: b?.deliveryLatencyMs?.p99, format: ms });
    row({
      figure: 'server CPU ms/msg',
      service: s?.serverCpuMsPerMessage,
      bare: b?.serverCpuMsPerMessage,
      format: three,
    });
    storeRows(s?.store);
    handlerRows(s?.cpu?.serverHandlerMeanMs, ['send']);
    errors(s, b);
  }

  // The client SDK against SDK.md's targets; no bare relay (the SDK speaks only the service's protocol).
  const k = results.client;
  if (k) {
    const s = k.service;
    const set = k.settings;
    const only = { format: ms, compare: false };
    const p50 = s?.connect?.ms?.p50 ?? null;
    row({
      scenario: 'client',
      figure: `connect → session p50 ms (${number(set.connects)} sequential, new client and user each)`,
      service: p50,
      ...only,
      target: '< 100 ms',
      ok: p50 === null ? null : p50 < 100,
    });
    row({ figure: 'connect → session p99 ms', service: s?.connect?.ms?.p99, ...only });
    for (const [index, backoff] of set.backoffs.entries()) {
      const run = s?.reconnect?.[index];
      const synced = run?.ms?.p50 ?? null;
      const label = `minDelayMs ${number(backoff.minDelayMs)}, maxDelayMs ${number(backoff.maxDelayMs)}${index === 0 ? ', SDK default' : ''}`;
      row({
        figure: `socket cut → back and 'synced' p50 ms (${number(set.drops)} cuts; ${label})`,
        service: synced,
        ...only,
        target: '< 1 s',
        ok: synced === null ? null : synced < 1000 && run.synced === run.drops,
      });
      row({ figure: "socket cut → 'synced' p99 ms", service: run?.ms?.p99, ...only });
      row({ figure: 'of which the backoff wait the SDK drew, p50 ms', service: run?.firstRetryDelayMs?.p50, ...only });
    }
    const sends = (run, label) => {
      const rate = run?.perSecond ?? null;
      row({
        figure: `msg/s stored, one client, ${number(set.sends)} sends at once, ${label}`,
        service: rate,
        format: int,
        compare: false,
        target: '> 1,000/s',
        ok: rate === null ? null : rate > 1000 && run.stored === run.count,
      });
      if (run?.early < run?.count) {
        row({
          figure: `  the first ${number(run.early)} stored, msg/s (inside the service's per-connection burst)`,
          service: run.earlyPerSecond,
          format: int,
          compare: false,
        });
      }
      row({
        figure: '  sends answered rate_limited, then resent by the SDK',
        service: run?.rateLimitedReplies,
        format: int,
        compare: false,
      });
      row({
        figure: "  history requests meanwhile (the SDK's gap fill; no one else sends)",
        service: run?.historyRequests,
        format: int,
        compare: false,
      });
    };
    sends(s?.sends, '1 conversation');
    sends(s?.sendsSpread, `${set.spreadConversations} conversations`);
    const heap = s?.heap?.heapPerClientKiB ?? null;
    row({
      figure: `heap per connected client, KB (${number(set.heapClients)} clients in one process, after GC)`,
      service: heap,
      format: one,
      compare: false,
      target: '< 1,024 KB',
      ok: heap === null ? null : heap < 1024 && s.heap.opened === set.heapClients,
    });
    row({
      figure: 'RSS per connected client, KB (same process)',
      service: s?.heap?.rssPerClientKiB,
      format: one,
      compare: false,
    });
    errors(s, null);
  }

  // The soak: growth over the second half of the run, per series, against SOAK_LIMITS.
  const soak = results.soak;
  if (soak) {
    const s = soak.service;
    const only = { compare: false };
    row({
      scenario: 'soak',
      figure: `msg/s stored, offered ${number(soak.settings.ratePerSecond)} (${number(soak.settings.pairs)} pairs, ${number(s?.sendingSeconds ?? soak.settings.durationMs / 1000, 0)} s, typing, reconnects, join/leave)`,
      service: s?.storedPerSecond,
      format: int,
      ...only,
    });
    row({ figure: 'sockets dropped and reconnected by the load', service: s?.reconnects, format: int, ...only });
    row({
      figure: 'messages stored but never received (live or get-unacked)',
      service: s?.missing,
      format: int,
      ...only,
      target: '0',
      ok: s?.missing == null ? null : s.missing === 0,
    });
    row({ figure: 'send → live receipt p99 ms', service: s?.deliveryMs?.p99, format: ms, ...only });
    const labels = {
      rssMiB: 'RSS growth, MB/min (2nd half, linear fit)',
      heapAfterGcMiB: 'V8 heap used after major GC, growth MB/min',
      loopP99Ms: 'event-loop delay p99 growth, ms/min',
      handles: 'active handles growth, /min',
      resources: 'active resources (handles, timers, …) growth, /min',
    };
    for (const [key, label] of Object.entries(labels)) {
      const v = s?.verdicts?.[key];
      row({
        figure: label,
        service: v?.secondHalfSlopePerMinute,
        format: (value) => number(value, 2),
        ...only,
        target: v ? `< ${number(v.limitPerMinute)}` : '',
        ok: v?.pass ?? null,
      });
    }
    errors(s, null);
  }
  return rows;
}

/** The soak's samples, one row per tenth of the run (means, the loop delay's worst second), and the verdicts. */
export function formatSoak(soak) {
  const s = soak?.service;
  if (!s?.samples?.length) return '';
  const tenths = Array.from({ length: 10 }, (_, i) =>
    s.samples.filter((x) => x.t > (i * s.durationSeconds) / 10 && x.t <= ((i + 1) * s.durationSeconds) / 10),
  ).filter((list) => list.length > 0);
  const mean = (list, key) => {
    const values = list.map((x) => x[key]).filter((v) => v !== null && v !== undefined);
    return values.length > 0 ? values.reduce((a, b) => a + b, 0) / values.length : null;
  };
  const max = (list, key) => {
    const values = list.map((x) => x[key]).filter((v) => v !== null && v !== undefined);
    return values.length > 0 ? Math.max(...values) : null;
  };
  const header = [
    't s',
    'RSS MB',
    'heap MB',
    'heap after GC',
    'loop p99 ms',
    'loop max ms',
    'handles',
    'resources',
    'sockets',
    'msg/s',
    'CPU cores',
  ];
  const body = tenths.map((list) => [
    number(list.at(-1).t),
    number(mean(list, 'rssMiB'), 1),
    number(mean(list, 'heapMiB'), 1),
    number(list.findLast((x) => x.heapAfterGcMiB !== null)?.heapAfterGcMiB ?? null, 1),
    number(max(list, 'loopP99Ms'), 1),
    number(max(list, 'loopMaxMs'), 1),
    number(mean(list, 'handles')),
    number(mean(list, 'resources')),
    number(mean(list, 'sockets')),
    number(mean(list, 'storedPerSecond')),
    number(mean(list, 'cpuCores'), 2),
  ]);
  const widths = header.map((title, i) => Math.max(title.length, ...body.map((cells) => cells[i].length)));
  const line = (cells) => cells.map((cell, i) => cell.padStart(widths[i])).join('  ');
  const verdicts = Object.entries(s.verdicts).map(
    ([key, v]) =>
      `  ${key.padEnd(14)} ${number(v.first, 1)} → ${number(v.last, 1)} (max ${number(v.max, 1)}); 2nd-half slope ${number(v.secondHalfSlopePerMinute, 2)} ${v.unit}/min over ${v.points} points, limit ${number(v.limitPerMinute)}: ${v.pass === null ? 'too few points' : v.pass ? 'PASS' : 'MISS'}`,
  );
  return [
    `soak: the service sampled every second (${s.samples.length} samples, ${s.failedScrapes} failed scrapes); one row per tenth of the run: means, the heap after the tenth's last major GC, the loop delay's worst second (prom-client samples it every 10 ms, so ~10 ms is an idle loop)`,
    line(header),
    line(widths.map((width) => '─'.repeat(width))),
    ...body.map(line),
    'growth over the second half (least-squares slope; limits and why in bench/soak-scenario.mjs):',
    ...verdicts,
    ...(s.durationSeconds < 120
      ? ['  (a run this short is a smoke test of the scenario; growth needs minutes: the default is 5)']
      : []),
  ].join('\n');
}

const COLUMNS = [
  ['scenario', 'scenario'],
  ['figure', 'figure'],
  ['service', 'service'],
  ['bare', 'bare relay'],
  ['ratio', 'ratio'],
  ['target', 'target'],
  ['result', 'result'],
];
const RIGHT = new Set(['service', 'bare', 'ratio']);

export function formatTable(rows) {
  const widths = COLUMNS.map(([key, title]) => Math.max(title.length, ...rows.map((row) => String(row[key]).length)));
  const line = (cells) =>
    cells
      .map((cell, i) => (RIGHT.has(COLUMNS[i][0]) ? cell.padStart(widths[i]) : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [
    line(COLUMNS.map(([, title]) => title)),
    line(widths.map((width) => '─'.repeat(width))),
    ...rows.map((row) => line(COLUMNS.map(([key]) => String(row[key])))),
  ].join('\n');
}

/** Cores used by each process group during each measured run. */
export function formatCpu(results) {
  const lines = [];
  const groups = ['service', 'bare', 'postgres', 'redis', 'load'];
  for (const [scenario, byTarget] of Object.entries(results)) {
    for (const target of ['service', 'bare']) {
      const cpu = byTarget?.[target]?.cpu;
      if (!cpu) continue;
      const cells = groups.map((group) => `${group} ${(cpu.cores[group] ?? 0).toFixed(2)}`).join('  ');
      lines.push(`${`${scenario} / ${target}`.padEnd(26)} ${cells}   (${cpu.wallSeconds} s)`);
    }
  }
  return lines.length > 0 ? `CPU cores used while measuring (2 = both cores busy):\n${lines.join('\n')}` : '';
}

/** The two-instances scenario: one column per placement of the clients, one row per figure. */
export function formatInstances(entry) {
  const result = entry?.service;
  if (!result?.variants) return '';
  const columns = [
    ['one', 'one instance'],
    ['split', 'two: senders A, receivers B'],
    ['mixed', 'two: mixed'],
    ['idle3', 'A→B, idle third C'],
  ].filter(([key]) => result.variants[key]);
  const rows = [];
  const row = (figure, pick, digits = 0) =>
    rows.push([
      figure,
      ...columns.map(([key]) => {
        const value = pick(result.variants[key]);
        return number(value, digits);
      }),
    ]);
  const t = (v) => v.throughput;
  const l = (v) => v.latency;
  row('pairs whose sender and receiver are on different instances', (v) => v.crossingPairs);
  row(
    `throughput: msg/s stored+delivered+acked (${result.pairs} pairs, window ${result.window})`,
    (v) => t(v).perSecond.completed,
  );
  row('  live deliveries/s', (v) => t(v).perSecond.delivered);
  row('  send → recipient ack done, p50 ms', (v) => t(v).completionLatencyMs.p50, 2);
  row('  send → recipient ack done, p99 ms', (v) => t(v).completionLatencyMs.p99, 2);
  row(
    `latency: p50 ms send → receipt, offered ${number(result.latencyRatePerSecond)} msg/s`,
    (v) => l(v).deliveryMs.p50,
    2,
  );
  row('  p99 ms', (v) => l(v).deliveryMs.p99, 2);
  row('  sent msg/s', (v) => l(v).achievedPerSecond);
  for (const { label, phase } of [
    { label: 'throughput', phase: t },
    { label: 'latency run', phase: l },
  ]) {
    row(`CPU ms/msg, instance A (${label})`, (v) => phase(v).cpuMsPerMessage.service, 3);
    row(`  instance B`, (v) => phase(v).cpuMsPerMessage.service2 ?? null, 3);
    row(`  instance C (no clients)`, (v) => phase(v).cpuMsPerMessage.service3 ?? null, 3);
    row(`  all instances`, (v) => phase(v).cpuMsPerMessage.servicesTotal, 3);
    row(`  PostgreSQL`, (v) => phase(v).cpuMsPerMessage.postgres, 3);
    row(`  Redis`, (v) => phase(v).cpuMsPerMessage.redis, 3);
    row(`Redis commands/msg (${label})`, (v) => phase(v).store.perMessage.redisCommands, 1);
    row(`  Redis bytes in/msg`, (v) => phase(v).store.perMessage.redisNetInputBytes);
    row(`  Redis bytes out/msg`, (v) => phase(v).store.perMessage.redisNetOutputBytes);
    row(`  PostgreSQL write transactions/msg`, (v) => phase(v).store.perMessage.pgWriteTransactions, 2);
    row(`  WAL bytes/msg`, (v) => phase(v).store.perMessage.pgWalBytes);
  }
  row('live messages not in seq order (both runs)', (v) => t(v).liveNotAscending + l(v).liveNotAscending);
  row('errors and timeouts (both runs)', (v) => t(v).errors + l(v).errors);
  const header = ['figure', ...columns.map(([, title]) => title)];
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((cells) => cells[i].length)));
  const line = (cells) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ');
  const commands = columns.map(([key, title]) => {
    const top = Object.entries(result.variants[key].throughput.redisCommandsPerMessage)
      .slice(0, 6)
      .map(([command, calls]) => `${command} ${number(calls, 2)}`)
      .join(', ');
    return `  ${title}: ${top}`;
  });
  const cores = columns.map(([key, title]) => {
    const { cores: used, wallSeconds } = result.variants[key].throughput.cpu;
    const cells = Object.entries(used)
      .filter(([group]) => group !== 'bare')
      .map(([group, value]) => `${group} ${value.toFixed(2)}`)
      .join('  ');
    return `  ${title}: ${cells}   (${wallSeconds} s)`;
  });
  return [
    'two-instances: the same one-to-one pairs with both clients on one instance (alone), senders on A and receivers on B, spread over both, and A→B beside a third instance with no clients (all share PostgreSQL and Redis)',
    line(header),
    line(widths.map((width) => '─'.repeat(width))),
    ...rows.map(line),
    'Redis commands per message by name (throughput, INFO commandstats, script-internal calls included):',
    ...commands,
    'CPU cores used during the throughput run (service = A, service2 = B, service3 = C):',
    ...cores,
  ].join('\n');
}
