// PAM checks in a worker thread (see pam.h). Requests go to the worker through `todo`, answers
// come back through `done` and an eventfd the loop watches. Everything the worker reads
// (user, password, address) is fixed before the request is queued; what it writes (ok,
// warnings) is read only after it handed the request back under the mutex.
#include "sluice/auth/pam.h"

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <security/pam_appl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>

#include <openssl/crypto.h>

#include "sluice/net/loop.h"
#include "sluice/util/log.h"

namespace sluice {

struct PamRequest {
    std::string user;
    std::string password;
    std::string rhost;
    void (*done)(void*, bool, std::vector<std::string>&) = nullptr;
    void* arg = nullptr;
    PamTicket* ticket = nullptr;         // loop thread only; nullptr once cancelled
    std::atomic<bool> cancelled{false};  // lets the worker skip a check nobody waits for
    bool ok = false;
    std::vector<std::string> warnings;
};

namespace {

constexpr const char* kService = "pgbouncer";  // PgBouncer's PAM service name

// Shared with the worker, which runs until the process ends: never destroyed (a condition
// variable's destructor at exit would wait for the worker blocked on it).
struct Shared {
    std::mutex mu;
    std::condition_variable work;
    std::deque<PamRequest*> todo;
    std::deque<PamRequest*> done;
};
Shared& g = *new Shared;
int g_event_fd = -1;
LoopWatch g_watch;
bool g_started = false;

std::string words(const char* what, const char* detail) {
    return std::string(what) + (detail ? detail : "");
}

// PAM asks for the password (PAM_PROMPT_ECHO_OFF) and may report errors; anything else gets
// an empty answer, as PgBouncer gives.
int converse(int n, const pam_message** msgs, pam_response** out, void* data) {
    auto* r = static_cast<PamRequest*>(data);
    if (n < 1 || !msgs || !r)
        return PAM_CONV_ERR;
    auto* resp = static_cast<pam_response*>(calloc(static_cast<size_t>(n), sizeof(pam_response)));
    if (!resp)
        return PAM_CONV_ERR;
    for (int i = 0; i < n; ++i) {
        switch (msgs[i]->msg_style) {
        case PAM_PROMPT_ECHO_OFF:
            resp[i].resp = strdup(r->password.c_str());
            if (!resp[i].resp) {
                for (int k = 0; k < i; ++k)
                    free(resp[k].resp);
                free(resp);
                return PAM_CONV_ERR;
            }
            break;
        case PAM_ERROR_MSG:
            r->warnings.push_back(words("pam_conversation(): PAM error: ", msgs[i]->msg));
            break;
        default:
            break;
        }
    }
    *out = resp;
    return PAM_SUCCESS;
}

// PgBouncer's pam_check_passwd: authenticate, then the account checks (expiry, hours).
bool check(PamRequest& r) {
    pam_conv conv{converse, &r};
    pam_handle_t* h = nullptr;
    int rc = pam_start(kService, r.user.c_str(), &conv, &h);
    if (rc != PAM_SUCCESS) {
        r.warnings.push_back(words("pam_start() failed: ", pam_strerror(nullptr, rc)));
        return false;
    }
    rc = pam_set_item(h, PAM_RHOST, r.rhost.c_str());
    if (rc != PAM_SUCCESS) {
        r.warnings.push_back("pam_set_item(): can't set PAM_RHOST to '" + r.rhost + "'");
        pam_end(h, rc);
        return false;
    }
    rc = pam_authenticate(h, PAM_SILENT);
    if (rc != PAM_SUCCESS) {
        r.warnings.push_back(words("pam_authenticate() failed: ", pam_strerror(h, rc)));
        pam_end(h, rc);
        return false;
    }
    rc = pam_acct_mgmt(h, PAM_SILENT);
    if (rc != PAM_SUCCESS) {
        r.warnings.push_back(words("pam_acct_mgmt() failed: ", pam_strerror(h, rc)));
        pam_end(h, rc);
        return false;
    }
    rc = pam_end(h, rc);
    if (rc != PAM_SUCCESS)
        r.warnings.push_back(words("pam_end() failed: ", pam_strerror(nullptr, rc)));
    return true;
}

void worker() {
    for (;;) {
        PamRequest* r;
        {
            std::unique_lock lock(g.mu);
            g.work.wait(lock, [] { return !g.todo.empty(); });
            r = g.todo.front();
            g.todo.pop_front();
        }
        r->ok = !r->cancelled.load(std::memory_order_relaxed) && check(*r);
        OPENSSL_cleanse(r->password.data(), r->password.size());
        {
            std::lock_guard lock(g.mu);
            g.done.push_back(r);
        }
        uint64_t one = 1;
        while (write(g_event_fd, &one, sizeof(one)) < 0 && errno == EINTR) {
        }
    }
}

void on_answers(void*) noexcept {
    uint64_t n;
    while (read(g_event_fd, &n, sizeof(n)) < 0 && errno == EINTR) {
    }
    std::deque<PamRequest*> answers;
    {
        std::lock_guard lock(g.mu);
        answers.swap(g.done);
    }
    // A callback may close other clients: their tickets clear req->ticket before we get there.
    for (PamRequest* r : answers) {
        if (PamTicket* t = r->ticket) {
            r->ticket = nullptr;
            pam_deliver_to(*t);
            r->done(r->arg, r->ok, r->warnings);
        }
        delete r;
    }
}

bool start_worker() {
    g_event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g_event_fd < 0) {
        log_error("PAM: eventfd failed: %s", strerror(errno));
        return false;
    }
    g_watch = LoopWatch{on_answers, nullptr};
    if (!loop_watch(g_event_fd, &g_watch)) {
        log_error("PAM: cannot watch the eventfd: %s", strerror(errno));
        close(g_event_fd);
        g_event_fd = -1;
        return false;
    }
    // Signals belong to the loop thread: the worker starts with all of them blocked.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
        std::thread(worker).detach();  // lives until the process exits
    } catch (const std::system_error& e) {
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        log_error("PAM: failed to create the authentication thread: %s", e.what());
        loop_unwatch(g_event_fd);  // the next PAM login tries again from the start
        close(g_event_fd);
        g_event_fd = -1;
        return false;
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    g_started = true;
    return true;
}

}  // namespace

void PamTicket::cancel() noexcept {
    if (!req_)
        return;
    req_->ticket = nullptr;
    req_->cancelled.store(true, std::memory_order_relaxed);
    req_ = nullptr;
}

void pam_deliver_to(PamTicket& t) noexcept {
    t.req_ = nullptr;
}

bool pam_check(PamTicket& t, const std::string& user, const std::string& password,
               const std::string& rhost, void (*done)(void*, bool, std::vector<std::string>&),
               void* arg) {
    if (!g_started && !start_worker())
        return false;
    t.cancel();
    auto* r = new PamRequest;
    r->user = user;
    r->password = password;
    r->rhost = rhost;
    r->done = done;
    r->arg = arg;
    r->ticket = &t;
    t.req_ = r;
    {
        std::lock_guard lock(g.mu);
        g.todo.push_back(r);
    }
    g.work.notify_one();
    return true;
}

}  // namespace sluice
