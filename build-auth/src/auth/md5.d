build-auth/src/auth/md5.o: src/auth/md5.cpp include/sluice/auth/md5.h \
 include/sluice/util/log.h
include/sluice/auth/md5.h:
include/sluice/util/log.h:
