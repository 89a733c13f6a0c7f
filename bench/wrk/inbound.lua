-- wrk script: POST pre-signed Twilio webhooks, one per line of payloads-<thread>.txt
-- (a line is "<X-Twilio-Signature>\t<form body>"). Each thread walks its own file in order from
-- line offset+1 (wrk ... -- <folder> <path> <offset>); done() prints one JSON line with how many
-- requests each thread sent and the latency figures.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local dir = args[1]
  signatures, bodies = {}, {}
  for line in io.lines(dir .. "/payloads-" .. id .. ".txt") do
    local tab = line:find("\t", 1, true)
    table.insert(signatures, line:sub(1, tab - 1))
    table.insert(bodies, line:sub(tab + 1))
  end
  path = args[2]
  offset = tonumber(args[3] or "0")
  sent = 0
  probed = false
end

function request()
  -- wrk may call request() once as a thread starts, to see whether requests change, and not
  -- send that one: the first call does not count, and the first request sent repeats it.
  if probed then sent = sent + 1 end
  probed = true
  local i = offset + math.max(sent, 1)
  if i > #bodies then i = #bodies end -- more than prepared: repeat the last (a replay)
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Twilio-Signature"] = signatures[i],
  }, bodies[i])
end

function done(summary, latency, requests)
  local sent = {}
  for _, t in ipairs(threads) do
    table.insert(sent, tostring(t:get("sent")))
  end
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "mean_us": %.1f, "connect": %d, "read": %d, "write": %d, "status": %d, '
      .. '"timeout": %d, "sent": [%s]}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status,
    e.timeout, table.concat(sent, ",")))
end
