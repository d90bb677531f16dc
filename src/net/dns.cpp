// Asynchronous server host name lookups with a cache: see net/dns.h.
#include "sluice/net/dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <unordered_map>

#include <event2/dns.h>
#include <event2/util.h>

#include "sluice/net/loop.h"
#include "sluice/util/log.h"

namespace sluice {
namespace {

struct HostEntry {
    std::string name;
    // Port 0 (set per waiter). After a failed lookup: still the last answer that had
    // addresses, which the next one is compared with (dns_on_address_gone).
    std::vector<PeerAddr> addrs;
    size_t next = 0;              // round-robin position
    usec_t expires = 0;           // monotonic; 0 = never answered
    std::string error;            // a remembered failure when not empty
    DnsTtl ttl{};                 // of the lookup in flight
    bool in_flight = false;
    bool refreshing = false;  // the lookup in flight is dns_refresh()'s
    std::vector<DnsWaiter*> waiters;
};

evdns_base* g_dns = nullptr;
// Entries are never erased while a lookup is in flight (the callback holds a pointer).
std::unordered_map<std::string, std::unique_ptr<HostEntry>> g_hosts;
bool g_starting = false;  // inside evdns_getaddrinfo(): an answer now is read by the caller
bool g_closing = false;   // dns_shutdown(): answers reach nobody
DnsAddressGoneFn g_gone_fn = nullptr;
std::vector<std::pair<std::string, PeerAddr>> g_gone;  // reported at the end of the turn

void report_gone() {
    std::vector<std::pair<std::string, PeerAddr>> gone;
    gone.swap(g_gone);
    for (const auto& [host, addr] : gone)
        if (g_gone_fn)
            g_gone_fn(host, addr);
}

void set_port(PeerAddr& a, int port) noexcept {
    auto p = htons(static_cast<uint16_t>(port));
    if (a.ss.ss_family == AF_INET)
        reinterpret_cast<sockaddr_in*>(&a.ss)->sin_port = p;
    else if (a.ss.ss_family == AF_INET6)
        reinterpret_cast<sockaddr_in6*>(&a.ss)->sin6_port = p;
}

bool numeric(const std::string& host, int port, PeerAddr& out) noexcept {
    out = PeerAddr{};
    if (inet_pton(AF_INET, host.c_str(), &reinterpret_cast<sockaddr_in*>(&out.ss)->sin_addr) == 1) {
        out.ss.ss_family = AF_INET;
        out.len = sizeof(sockaddr_in);
    } else if (inet_pton(AF_INET6, host.c_str(),
                         &reinterpret_cast<sockaddr_in6*>(&out.ss)->sin6_addr) == 1) {
        out.ss.ss_family = AF_INET6;
        out.len = sizeof(sockaddr_in6);
    } else {
        return false;
    }
    set_port(out, port);
    return true;
}

// The next address of an answered entry, with the port.
void pick(HostEntry& e, int port, PeerAddr& out, DnsWaiter* w) {
    out = e.addrs[e.next++ % e.addrs.size()];
    set_port(out, port);
    w->addr_count = static_cast<uint16_t>(std::min<size_t>(e.addrs.size(), UINT16_MAX));
}

bool has_ip(const std::vector<PeerAddr>& addrs, const PeerAddr& a) noexcept {
    return std::any_of(addrs.begin(), addrs.end(),
                       [&](const PeerAddr& b) { return same_ip(a, b); });
}

void record(HostEntry& e, int result, evutil_addrinfo* res) {
    bool refresh = e.refreshing;
    e.refreshing = false;
    std::vector<PeerAddr> fresh;
    if (result == 0) {
        for (evutil_addrinfo* ai = res; ai; ai = ai->ai_next) {
            if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                ai->ai_addrlen > sizeof(sockaddr_storage))
                continue;
            PeerAddr a;
            memcpy(&a.ss, ai->ai_addr, ai->ai_addrlen);
            a.len = static_cast<socklen_t>(ai->ai_addrlen);
            set_port(a, 0);
            if (!has_ip(fresh, a))
                fresh.push_back(a);
        }
    }
    if (res)
        evutil_freeaddrinfo(res);
    if (fresh.empty()) {
        // PgBouncer's line, once per lookup (not per server told), without a connection
        // prefix: the number is the resolver's (evdns: the getaddrinfo error code).
        log_warning("DNS lookup failed: %s: result=%d", e.name.c_str(), result);
    }
    if (fresh.empty() && refresh && e.error.empty()) {
        // A failed refresh keeps the answer in use until it expires as usual.
        log_debug("dns: refreshing %s failed (%s)", e.name.c_str(),
                  result == 0 ? "no address" : evutil_gai_strerror(result));
        return;
    }
    if (fresh.empty()) {
        // A failure says nothing about where the name went: nothing is retired (as PgBouncer).
        e.error = "could not resolve \"" + e.name + "\": " +
                  (result == 0 ? "no address" : evutil_gai_strerror(result));
        e.expires = mono_now() + e.ttl.fail;
        return;
    }
    for (const PeerAddr& old : e.addrs)
        if (!has_ip(fresh, old))
            g_gone.emplace_back(e.name, old);
    if (!g_gone.empty())
        loop_defer(report_gone);
    e.addrs = std::move(fresh);
    e.next = 0;
    e.error.clear();
    e.expires = mono_now() + e.ttl.ok;
}

// Tells every waiter, one at a time: a callback may cancel or add others.
void notify(HostEntry& e) {
    while (!e.waiters.empty()) {
        DnsWaiter* w = e.waiters.front();
        e.waiters.erase(e.waiters.begin());
        w->waiting = false;
        if (e.error.empty()) {
            PeerAddr a;
            pick(e, w->port, a, w);
            w->fn(w, &a, std::string());
        } else {
            w->fn(w, nullptr, e.error);
        }
    }
}

void on_answer(int result, evutil_addrinfo* res, void* arg) {
    auto* e = static_cast<HostEntry*>(arg);
    e->in_flight = false;
    time_update();
    if (g_closing || result == EVUTIL_EAI_CANCEL) {  // dns_shutdown()
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    record(*e, result, res);
    if (e->error.empty())
        log_debug("dns: %s resolved, %zu address(es)", e->name.c_str(), e->addrs.size());
    else
        log_debug("dns: %s", e->error.c_str());
    if (!g_starting)
        notify(*e);
}

// Starts the lookup of e. False = answered at once (/etc/hosts, an error): e holds it.
bool start_lookup(HostEntry& e, DnsTtl ttl) {
    evutil_addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    e.ttl = ttl;
    e.in_flight = true;
    g_starting = true;
    evdns_getaddrinfo(g_dns, e.name.c_str(), nullptr, &hints, on_answer, &e);
    g_starting = false;
    if (!e.in_flight)
        return false;
    loop_wake_libevent();  // evdns's socket event is applied in this turn
    return true;
}

}  // namespace

bool dns_init(event_base* base, const std::string& resolv_conf, std::string& err) {
    g_dns = evdns_base_new(base, 0);
    if (!g_dns) {
        err = "cannot create the DNS resolver";
        return false;
    }
    const char* path = resolv_conf.empty() ? "/etc/resolv.conf" : resolv_conf.c_str();
    int rc = evdns_base_resolv_conf_parse(g_dns, DNS_OPTIONS_ALL, path);
    if (rc != 0)
        log_warning("dns: cannot use %s (evdns error %d); asking 127.0.0.1", path, rc);
    return true;
}

void dns_shutdown() noexcept {
    // Lookups in flight end here without telling anyone (called before the servers go).
    g_closing = true;
    for (auto& [name, e] : g_hosts) {
        for (DnsWaiter* w : e->waiters)
            w->waiting = false;
        e->waiters.clear();
    }
    if (g_dns) {
        evdns_base_free(g_dns, 1);  // fails the lookups in flight (their answers are dropped)
        g_dns = nullptr;
    }
    g_hosts.clear();
    g_gone.clear();
    g_closing = false;
}

DnsStatus dns_resolve(const std::string& host, int port, DnsTtl ttl, PeerAddr& out,
                      std::string& err, DnsWaiter* w) {
    if (numeric(host, port, out)) {
        w->addr_count = 1;
        return DnsStatus::Ready;
    }
    auto& slot = g_hosts[host];
    if (!slot) {
        slot = std::make_unique<HostEntry>();
        slot->name = host;
    }
    HostEntry& e = *slot;
    if (e.expires != 0 && e.expires > mono_now()) {  // (a refresh may be in flight)
        if (!e.error.empty()) {
            err = e.error;
            return DnsStatus::Failed;
        }
        pick(e, port, out, w);
        return DnsStatus::Ready;
    }
    if (!g_dns) {
        err = "could not resolve \"" + host + "\": no resolver";
        return DnsStatus::Failed;
    }
    if (!e.in_flight && !start_lookup(e, ttl)) {  // answered at once
        if (!e.error.empty()) {
            err = e.error;
            return DnsStatus::Failed;
        }
        pick(e, port, out, w);
        return DnsStatus::Ready;
    }
    w->port = port;
    w->waiting = true;
    e.waiters.push_back(w);
    return DnsStatus::Pending;
}

void dns_refresh(const std::string& host) {
    auto it = g_hosts.find(host);
    if (!g_dns || it == g_hosts.end() || it->second->in_flight || it->second->expires == 0)
        return;
    HostEntry& e = *it->second;
    e.refreshing = true;
    static_cast<void>(start_lookup(e, e.ttl));  // nobody waits for it
}

void dns_on_address_gone(DnsAddressGoneFn fn) noexcept {
    g_gone_fn = fn;
}

void dns_cancel(DnsWaiter* w) noexcept {
    if (!w->waiting)
        return;
    w->waiting = false;
    for (auto& [name, e] : g_hosts) {
        auto it = std::find(e->waiters.begin(), e->waiters.end(), w);
        if (it != e->waiters.end()) {
            e->waiters.erase(it);
            return;
        }
    }
}

std::vector<DnsHostInfo> dns_hosts() {
    std::vector<DnsHostInfo> out;
    usec_t now = mono_now();
    for (const auto& [name, e] : g_hosts) {
        if (e->expires == 0)
            continue;  // never answered yet
        DnsHostInfo h;
        h.host = name;
        h.ttl = e->expires > now ? (e->expires - now) / 1000000 : 0;
        if (!e->error.empty()) {  // a failure: no addresses (addrs is the last answer)
            out.push_back(std::move(h));
            continue;
        }
        for (const PeerAddr& a : e->addrs) {
            if (!h.addrs.empty())
                h.addrs += ',';
            h.addrs += a.host();
        }
        out.push_back(std::move(h));
    }
    std::sort(out.begin(), out.end(),
              [](const DnsHostInfo& a, const DnsHostInfo& b) { return a.host < b.host; });
    return out;
}

DnsCounts dns_counts() noexcept {
    DnsCounts c;
    for (const auto& [name, e] : g_hosts) {
        if (e->expires != 0)
            ++c.names;
        if (e->in_flight)
            ++c.queries;
        c.pending += e->waiters.size();
    }
    return c;
}

}  // namespace sluice
