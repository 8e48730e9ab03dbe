-- test/bench/message.lua: wrk script for fast_plivo's ceiling (test/bench/run.sh):
-- a Send Message request as the dispatcher sends it; BENCH_AUTH is the
-- Authorization header (Basic ...).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
wrk.body = '{"src":"14155550000","dst":"14155550001","text":"Your verification code is 123456.","type":"sms","log":"false"}'

function done(summary, latency, requests)
	io.write(string.format("RESULT %d %d %d %d %.3f %.3f\n", summary.requests, summary.duration,
		summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
		latency:percentile(50) / 1000.0, latency:percentile(99) / 1000.0))
end
