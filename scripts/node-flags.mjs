// The Node flags the service runs with: `npm start`, `npm run start:prod`, the Dockerfile
// and `npm run bench` all use these (package.json and the Dockerfile spell them out; a
// unit test keeps them equal).
//   --enable-source-maps    stack traces in logs point at src/*.ts
//   --max-semi-space-size   a 32 MB young generation (Node 20's default is 16 MB): the
//                           send path's short-lived objects die young instead of being
//                           promoted while their I/O is in flight; measured with
//                           `npm run bench`: about 10-15% less CPU per message. 64 MB
//                           was faster still but cost ~10 KB of RSS per idle connection.
export const SERVICE_NODE_FLAGS = ['--enable-source-maps', '--max-semi-space-size=32'];
