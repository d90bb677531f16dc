build-auth/src/admin/admin.o: src/admin/admin.cpp \
 include/sluice/admin/admin.h include/sluice/pool/control.h \
 include/sluice/pool/objects.h include/sluice/auth/auth_query.h \
 include/sluice/auth/hba.h include/sluice/auth/conn_info.h \
 include/sluice/auth/scram.h include/sluice/config/config.h \
 include/sluice/net/sbuf.h include/sluice/proto/packet.h \
 include/sluice/net/sockets.h include/sluice/proto/tracker.h \
 include/sluice/ps_cache.h include/sluice/stats.h \
 include/sluice/util/time.h include/sluice/util/list.h \
 include/sluice/util/log.h src/admin/internal.h \
 include/sluice/pool/pool.h include/sluice/auth/userlist.h
include/sluice/admin/admin.h:
include/sluice/pool/control.h:
include/sluice/pool/objects.h:
include/sluice/auth/auth_query.h:
include/sluice/auth/hba.h:
include/sluice/auth/conn_info.h:
include/sluice/auth/scram.h:
include/sluice/config/config.h:
include/sluice/net/sbuf.h:
include/sluice/proto/packet.h:
include/sluice/net/sockets.h:
include/sluice/proto/tracker.h:
include/sluice/ps_cache.h:
include/sluice/stats.h:
include/sluice/util/time.h:
include/sluice/util/list.h:
include/sluice/util/log.h:
src/admin/internal.h:
include/sluice/pool/pool.h:
include/sluice/auth/userlist.h:
