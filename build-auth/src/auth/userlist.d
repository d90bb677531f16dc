build-auth/src/auth/userlist.o: src/auth/userlist.cpp \
 include/sluice/auth/userlist.h include/sluice/util/log.h
include/sluice/auth/userlist.h:
include/sluice/util/log.h:
