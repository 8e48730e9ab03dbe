-- test/bench/callbacks.lua: wrk script for the callbacks bench (test/bench/run.sh).
-- wrk's Lua has no HMAC, so bench.py pre-signs the requests: CB_FILE holds one
-- a line, "nonce<TAB>V3 signature<TAB>form body" (an empty signature: send
-- the request unsigned).  Thread i of n sends lines i, i+n, ... so that no
-- nonce is sent twice while the file lasts; CB_PATH is the request path.
local path = os.getenv("CB_PATH")
local nonces, sigs, bodies = {}, {}, {}
local index, step = 0, 1
local threads = {}

function setup(thread)
	thread:set("tid", #threads)
	table.insert(threads, thread)
end

function init(args)
	for line in io.lines(os.getenv("CB_FILE")) do
		local nonce, sig, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
		table.insert(nonces, nonce)
		table.insert(sigs, sig)
		table.insert(bodies, body)
	end
	index = tid
	step = tonumber(os.getenv("CB_THREADS"))
end

function request()
	local i = index % #bodies + 1
	local headers = {["Content-Type"] = "application/x-www-form-urlencoded"}
	index = index + step
	if sigs[i] ~= "" then
		headers["X-Plivo-Signature-V3"] = sigs[i]
		headers["X-Plivo-Signature-V3-Nonce"] = nonces[i]
	end
	return wrk.format("POST", path, headers, bodies[i])
end

function done(summary, latency, requests)
	io.write(string.format("RESULT %d %d %d %d %.3f %.3f\n", summary.requests, summary.duration,
		summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
		latency:percentile(50) / 1000.0, latency:percentile(99) / 1000.0))
end
