#!/usr/bin/env php
<?php
// Counter in PHP: prints 1..COUNT, one number per line, pausing DELAY seconds.
//
//   websocketd-py --port=8080 examples/counter/count.php        # 1..10, every 0.5 s
//   websocketd-py --port=8080 examples/counter/count.php 3 0.1  # 1..3, every 0.1 s

$count = isset($argv[1]) ? (int)$argv[1] : 10;
$delay = isset($argv[2]) ? (float)$argv[2] : 0.5;

for ($i = 1; $i <= $count; $i++) {
    echo $i, "\n";
    // Send the line now instead of keeping it in PHP's output buffer.
    flush();
    usleep((int)($delay * 1000000));
}
