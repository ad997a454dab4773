/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The libFuzzer entry points every fuzz target defines. */
#ifndef FUZZ_COMMON_FUZZ_H
#define FUZZ_COMMON_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
