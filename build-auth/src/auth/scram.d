build-auth/src/auth/scram.o: src/auth/scram.cpp \
 include/sluice/auth/scram.h include/sluice/util/log.h
include/sluice/auth/scram.h:
include/sluice/util/log.h:
