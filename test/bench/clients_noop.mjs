// test/bench/clients_noop.mjs KIND RUN CONCURRENCY BATCH -- the node client
// working no-op stages of kind KIND until run RUN is over (test/bench/clients.sh).
import { Operator, Worker } from '../../clients/node/dist/src/index.js';

const [kind, run, concurrency, batch] = process.argv.slice(2);
const worker = new Worker({ concurrency: Number(concurrency), batch: Number(batch), worker: `bench-node-${process.pid}` });
worker.handle(kind, async () => ({}));
await worker.start();
const op = new Operator();
const outcome = await op.run(Number(run)).wait({ timeout: 600000 });
await worker.stop();
await op.close();
if (outcome.state !== 'succeeded') process.exit(1);
