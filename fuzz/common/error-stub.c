/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Minimal qapi/error.c for fuzz targets that compile QEMU files directly. */

#include "qemu/osdep.h"
#include "qapi/error.h"

struct Error {
    char *msg;
};

Error *error_abort;
Error *error_fatal;
Error *error_warn;

void error_setg_internal(Error **errp, const char *src, int line,
                         const char *func, const char *fmt, ...)
{
    va_list ap;
    Error *err;

    if (!errp) {
        return;
    }
    /* As in QEMU: setting an error twice is a programming error. */
    assert(*errp == NULL);
    err = g_new0(Error, 1);
    va_start(ap, fmt);
    err->msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    *errp = err;
}

const char *error_get_pretty(const Error *err)
{
    return err->msg;
}

void error_free(Error *err)
{
    if (err) {
        g_free(err->msg);
        g_free(err);
    }
}
