# Statistics shared by the benchmarks: medians, spreads and ratios of the
# numbers each run prints, "-" wherever a value is missing.
# Sourced by bench/proxy.sh, bench/pool.sh and bench/replicate.sh.

median() {
	printf '%s\n' "$@" | sort -g | awk '
		NF { v[++n] = $1 }
		END {
			if (n == 0) print "-"
			else if (n % 2) print v[(n + 1) / 2]
			else print (v[n / 2] + v[n / 2 + 1]) / 2
		}'
}

# spread V...: (max - min) / median of the values, in percent, or "-".
spread() {
	printf '%s\n' "$@" | sort -g | awk '
		NF { v[++n] = $1 }
		END {
			if (n < 2) { print "-"; exit }
			m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
			if (m + 0 == 0) print "-"; else printf "%.0f%%\n", 100 * (v[n] - v[1]) / m
		}'
}

# ratio A B: A/B with two decimals, or "-" when either is missing.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "-" || b == "-" || b + 0 == 0) print "-"
		else printf "%.2f\n", a / b
	}'
}
