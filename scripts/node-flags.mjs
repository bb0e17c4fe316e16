// The Node flags the service runs with: `npm start`, `npm run start:prod`, the Dockerfile
// and `npm run bench` all use these (package.json and the Dockerfile spell them out; a
// test keeps them equal), so the bench measures the service as it runs in production.
//   --enable-source-maps    stack traces in logs point at src/*.ts
// (A 32 MB young generation, --max-semi-space-size=32, was tried: 3 alternating bench
// pairs gave 0.201 vs 0.210 ms of CPU per message, within the runs' noise, so it is not used.)
export const SERVICE_NODE_FLAGS = ['--enable-source-maps'];
