/**
 * The service's pub/sub channels, per Redis database: deployments sharing a Redis server
 * on different databases stay apart.
 */

/** Cache invalidations (CacheBus); every instance of every version subscribes. */
export const cacheChannelOf = (db: number) => `cache:invalidate:${db}`;

/** Instance announcements (InstanceTopology). */
export const instancesChannelOf = (db: number) => `instances:${db}`;

/** Live messages on their way to every instance's sockets (LiveStream). */
export const liveChannelOf = (db: number) => `live:messages:${db}`;

/**
 * Each instance's summary of the live messages it published lately (LiveStream). A
 * channel of its own: an instance of an earlier version, during a rolling deploy, reads
 * every payload of the live channel as a message.
 */
export const liveTipsChannelOf = (db: number) => `live:tips:${db}`;
