// Server host names resolved without blocking the loop (libevent's evdns), with PgBouncer's
// cache: an answer is kept dns_max_ttl (a failure dns_nxdomain_ttl) whatever the record's
// TTL says, and the addresses of a name are used round-robin. Numeric addresses never reach
// the resolver. Names in /etc/hosts are answered from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <event2/event.h>

#include "sluice/net/sockets.h"
#include "sluice/util/time.h"

namespace sluice {

// Someone waiting for a lookup (a server connection being opened). fn runs from the loop
// with the address (port set), or with nullptr and the reason, unless dns_cancel() came first.
struct DnsWaiter {
    void (*fn)(DnsWaiter* w, const PeerAddr* addr, const std::string& err) = nullptr;
    void* arg = nullptr;  // the owner's
    int port = 0;
    uint16_t addr_count = 0;  // set with each address handed out: how many the name has
    bool waiting = false;
};

// resolv_conf: "" = /etc/resolv.conf. A file that cannot be read leaves the resolver with
// 127.0.0.1 as its name server (logged).
bool dns_init(event_base* base, const std::string& resolv_conf, std::string& err);
// Fails lookups in flight without calling their waiters; drops the cache.
void dns_shutdown() noexcept;

enum class DnsStatus : uint8_t {
    Ready,    // out holds the address
    Failed,   // err says why (a remembered failure or an impossible name)
    Pending,  // w joined the name's lookup; w->fn follows
};
struct DnsTtl {
    usec_t ok;    // dns_max_ttl
    usec_t fail;  // dns_nxdomain_ttl
};
// w->addr_count is set whenever an address is handed out (Ready or through w->fn).
DnsStatus dns_resolve(const std::string& host, int port, DnsTtl ttl, PeerAddr& out,
                      std::string& err, DnsWaiter* w);
// Leaves the lookup (the waiter goes away). Does nothing when w is not waiting.
void dns_cancel(DnsWaiter* w) noexcept;

// Looks a cached name up again now (dns_zone_check_period), whatever its answer's age; the
// cached answer stays in use meanwhile. Nothing for a name never looked up or in flight.
void dns_refresh(const std::string& host);

// A fresh answer for a name lacks an address its previous answer had (a DNS failover or
// switchover moved the name): fn(host, address with port 0) runs for each such address, at
// the end of the loop turn. Server connections to the old address should be retired.
using DnsAddressGoneFn = void (*)(const std::string& host, const PeerAddr& gone);
void dns_on_address_gone(DnsAddressGoneFn fn) noexcept;

// SHOW DNS_HOSTS: the cached names, seconds until each expires, their addresses.
struct DnsHostInfo {
    std::string host;
    int64_t ttl;
    std::string addrs;
};
std::vector<DnsHostInfo> dns_hosts();
// SHOW LISTS: cached names, lookups in flight, waiters on them.
struct DnsCounts {
    size_t names = 0;
    size_t queries = 0;
    size_t pending = 0;
};
DnsCounts dns_counts() noexcept;

}  // namespace sluice
