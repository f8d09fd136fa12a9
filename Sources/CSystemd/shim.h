#ifndef UDPRELAYD_CSYSTEMD_SHIM_H
#define UDPRELAYD_CSYSTEMD_SHIM_H
/* sd_journal_sendv as a plain function, not the macro that adds CODE_FILE/CODE_LINE. */
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#endif
