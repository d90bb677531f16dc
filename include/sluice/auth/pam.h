// auth_type = pam: client passwords are checked by PAM, service "pgbouncer" (PgBouncer's name,
// so an operator's /etc/pam.d/pgbouncer works unchanged). PAM modules block (files, network,
// delays after a failure), so the checks run one at a time in a worker thread, the only
// other thread in the process; the loop learns of a finished check through an eventfd. The
// thread touches nothing of the pooler: it gets copies of the user name, password and client
// address, and hands back the answer and the log lines PAM produced, which the loop writes.
#pragma once

#include <string>
#include <vector>

namespace sluice {

struct PamRequest;
class PamTicket;
void pam_deliver_to(PamTicket& t) noexcept;  // (pam.cpp: the answer arrived)

// A check in flight for one client. Destroying it (the client went away, or its login state
// was freed) drops the answer when it comes.
class PamTicket {
public:
    PamTicket() = default;
    PamTicket(const PamTicket&) = delete;
    PamTicket& operator=(const PamTicket&) = delete;
    ~PamTicket() { cancel(); }
    void cancel() noexcept;

private:
    friend bool pam_check(PamTicket&, const std::string&, const std::string&, const std::string&,
                          void (*)(void*, bool, std::vector<std::string>&), void*);
    friend void pam_deliver_to(PamTicket&) noexcept;
    PamRequest* req_ = nullptr;
};

// Queues a check of (user, password) from client address rhost; done(arg, ok, warnings) runs
// later on the loop thread, unless the ticket was cancelled first (warnings: PAM's complaints,
// PgBouncer's words, for the caller to log; PgBouncer writes them without a client prefix).
// False: the worker could not be started (logged); nothing was queued.
bool pam_check(PamTicket& t, const std::string& user, const std::string& password,
               const std::string& rhost,
               void (*done)(void* arg, bool ok, std::vector<std::string>& warnings), void* arg);

}  // namespace sluice
