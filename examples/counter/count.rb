#!/usr/bin/env ruby
# Counter in Ruby: prints 1..COUNT, one number per line, pausing DELAY seconds.
#
#   websocketd-py --port=8080 examples/counter/count.rb        # 1..10, every 0.5 s
#   websocketd-py --port=8080 examples/counter/count.rb 3 0.1  # 1..3, every 0.1 s

count = (ARGV[0] || 10).to_i
delay = (ARGV[1] || 0.5).to_f

# stdout is a pipe, so Ruby would buffer it. sync = true makes every
# write go out immediately.
$stdout.sync = true

(1..count).each do |i|
  puts i
  sleep delay
end
