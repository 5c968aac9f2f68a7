#!/usr/bin/env node
// Counter in Node.js: prints 1..COUNT, one number per line, pausing DELAY seconds.
//
//   websocketd-py --port=8080 examples/counter/count.js        # 1..10, every 0.5 s
//   websocketd-py --port=8080 examples/counter/count.js 3 0.1  # 1..3, every 0.1 s

const count = parseInt(process.argv[2] || "10", 10);
const delay = parseFloat(process.argv[3] || "0.5");

let i = 1;
function tick() {
  // On Linux, process.stdout.write() to a pipe goes out right away (Node
  // does not buffer pipes), so every line is sent as soon as it is written.
  process.stdout.write(i + "\n");
  i++;
  if (i <= count) setTimeout(tick, delay * 1000);
}
tick();
