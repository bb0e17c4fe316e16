// One free-port picker for the whole project: the local-services launcher's (which
// prefers ports below the kernel's ephemeral range, so that outgoing connections cannot
// take one before its server binds).
export { freePort, freePorts } from '../../scripts/local-services.mjs';
