// Starts telegram-test-api (the npm peer, pinned in package-lock.json) on a free loopback port for the
// binary's channel tests, and prints "listening <port>" once it accepts requests. Exits when its standard
// input closes (the test holds it open), so a crashed test leaves no server behind.
const TelegramServer = require('telegram-test-api');
const net = require('net');

async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

(async () => {
  const port = await freePort();
  const server = new TelegramServer({ port, host: '127.0.0.1', storeTimeout: 600 });
  await server.start();
  process.stdout.write(`listening ${port}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
