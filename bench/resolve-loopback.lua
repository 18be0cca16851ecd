-- wrk script: connect to 127.0.0.1 whatever the URL's host, so the URL's host (the branded
-- domain) is still sent as SNI and Host without touching /etc/hosts.
wrk.resolve = function(host, service)
  local addrs = wrk.lookup("127.0.0.1", service)
  wrk.addrs = addrs
end
