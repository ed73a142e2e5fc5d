// The Linux event interfaces Glibc's Swift module leaves out: epoll and eventfd, for the bench's raw
// WebSocket subscribers (Sources/stormctl/Bench/RawSubscriberLoops.swift).
#pragma once
#ifdef __linux__
#include <sys/epoll.h>
#include <sys/eventfd.h>
#endif
