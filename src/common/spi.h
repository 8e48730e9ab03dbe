/*-------------------------------------------------------------------------
 *
 * spi_util.h
 *	  Small helpers around SPI shared by the SQL functions and the workers:
 *	  plans prepared once per process, executed with checked results.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_SPI_UTIL_H
#define PLIVO_OTP_SPI_UTIL_H

#include "executor/spi.h"

/* A statement prepared on first use and kept for the life of the process. */
typedef struct PlivoOtpStatement
{
	const char *sql;
	int			nargs;
	Oid			argtypes[10];
	SPIPlanPtr	plan;
} PlivoOtpStatement;

extern int	plivo_otp_exec(PlivoOtpStatement *stmt, Datum *values, const char *nulls,
						   bool read_only, long count);
extern int	plivo_otp_exec_latest(PlivoOtpStatement *stmt, Datum *values,
								  const char *nulls, long count);
extern Datum plivo_otp_get(int row, int col, bool *isnull);
extern bool plivo_otp_get_bool(int row, int col);
extern char *plivo_otp_get_text(int row, int col);

#endif							/* PLIVO_OTP_SPI_UTIL_H */
