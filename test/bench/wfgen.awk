# test/bench/wfgen.awk -- synthesize a scientific workflow in the shape of a
# Pegasus workflow family, as a task graph in the STG format (used by
# test/bench/plan.sh; test/bench/stg2sql.awk turns it into a parflow workflow).
#
#   awk -v family=montage -v a=5 -v b=5 -v seed=1 -f wfgen.awk
#
# These are NOT traces of real runs: the machine has no access to the public
# archives (WfCommons, the Pegasus workflow gallery).  The structures follow
# the published shapes of the families (Bharathi et al., "Characterization of
# scientific workflows", WORKS 2008; Juve et al., "Characterizing and
# profiling scientific workflows", FGCS 29(3), 2013; the WfCommons recipes),
# and each task's runtime is its type's mean below times a factor drawn
# uniformly from [0.5, 1.5] by a fixed-seed generator, so every run of the
# bench plans the same graphs.  The means are of the order those papers
# report per task type; they are this file's choice, not measurements.
#
# Families and their size parameters a, b:
#   montage      a x b grid of images: mProjectPP per image; mDiffFit per
#                overlapping pair (right, below, diagonal neighbours) after
#                both projections; mConcatFit after every mDiffFit; mBgModel;
#                mBackground per image after mBgModel and its projection;
#                mImgtbl after every mBackground; mAdd; mShrink; mJPEG.
#   epigenomics  a lanes, b chunks per lane: fastQSplit per lane; per chunk the
#                chain filterContams, sol2sanger, fast2bfq, map; mapMerge per
#                lane after its maps; maqIndex after every mapMerge; pileup.
#   cybershake   a ExtractSGT, b SeismogramSynthesis after each; a
#                PeakValCalcOkaya after each synthesis; ZipSeis after every
#                synthesis, ZipPSA after every PeakValCalcOkaya.
#   ligo         a groups of b: TmpltBank, Inspiral (1:1), Thinca per group;
#                then TrigBank (after the Thinca), Inspiral (1:1), Thinca.
#   sipht        a partitions: b Patser then Patser_concate; Transterm,
#                Findterm, RNAMotif, Blast then SRNA; FFN_parse,
#                Blast_synteny, Blast_candidate, Blast_QRNA, Blast_paralogues
#                after SRNA; SRNA_annotate after those and Patser_concate.
#   genome       1000Genome, a chromosomes of b individuals: individuals then
#                individuals_merge, sifting; per population (7)
#                mutation_overlap and frequency after the merge and sifting.
#   seismology   a sG1IterDecon then one wrapper_siftSTFByMisfit.
#   soykb        a samples: the chain alignment_to_reference, sort_sam,
#                dedup, add_replace, realign_target_creator, indel_realign,
#                haplotype_caller; b genotype_gvcfs after every
#                haplotype_caller; combine_variants; select_variants_snp and
#                _indel, then filtering_snp and _indel; merge_gcvf after
#                every haplotype_caller.
#
# Output: "# ..." header lines (family, type counts), then one task a line:
# `id cost npred pred...`, ids from 1, costs in milliseconds (at least 1).

# Park-Miller minimal standard generator: exact in double arithmetic, so
# every awk gives the same numbers.
function rnd() {
    state = (state * 16807) % 2147483647
    return state / 2147483647
}

# A new task of a type; returns its id.
function task(type,    id, c) {
    id = ++ntask
    c = int(mean[type] * 1000 * (0.5 + rnd()) + 0.5)
    if (c < 1)
        c = 1
    cost[id] = c
    ttype[id] = type
    count[type]++
    npred[id] = 0
    return id
}

function dep(id, p) {
    pred[id, ++npred[id]] = p
}

BEGIN {
    state = (seed > 0 ? seed : 1) * 7919 % 2147483647
    if (state == 0)
        state = 1
    ntask = 0
    a += 0; b += 0
    if (a < 1 || (b < 1 && family != "seismology")) {
        print "wfgen.awk: a and b must be at least 1" > "/dev/stderr"
        exit 1
    }

    # mean runtimes per task type, seconds
    split("mProjectPP 13.6 mDiffFit 10.6 mConcatFit 43 mBgModel 38 mBackground 11.2 mImgtbl 5 mAdd 62 mShrink 21 mJPEG 4 " \
          "fastQSplit 34.3 filterContams 2.5 sol2sanger 0.5 fast2bfq 1.4 map 204 mapMerge 11.1 maqIndex 43.6 pileup 55.9 " \
          "ExtractSGT 110.6 SeismogramSynthesis 38.9 ZipSeis 265.6 PeakValCalcOkaya 0.55 ZipPSA 195.5 " \
          "TmpltBank 18.1 Inspiral 460 Thinca 5.4 TrigBank 5.1 " \
          "Patser 0.96 Patser_concate 0.1 Transterm 32.4 Findterm 594.9 RNAMotif 25.6 Blast 331 SRNA 12.4 " \
          "FFN_parse 0.7 Blast_synteny 3.4 Blast_candidate 0.6 Blast_QRNA 440.3 Blast_paralogues 0.7 SRNA_annotate 0.14 " \
          "individuals 36 individuals_merge 20 sifting 3 mutation_overlap 45 frequency 150 " \
          "sG1IterDecon 1.8 wrapper_siftSTFByMisfit 4 " \
          "alignment_to_reference 300 sort_sam 40 dedup 60 add_replace 30 realign_target_creator 200 indel_realign 150 " \
          "haplotype_caller 400 genotype_gvcfs 300 combine_variants 60 select_variants_snp 20 select_variants_indel 20 " \
          "filtering_snp 10 filtering_indel 10 merge_gcvf 100", kv, " ")
    for (i = 1; i in kv; i += 2)
        mean[kv[i]] = kv[i + 1] + 0

    if (family == "montage") {
        for (r = 0; r < a; r++)
            for (c = 0; c < b; c++)
                proj[r, c] = task("mProjectPP")
        nd = 0
        for (r = 0; r < a; r++)
            for (c = 0; c < b; c++) {
                split("0 1 1 0 1 1", off, " ")
                for (k = 1; k <= 5; k += 2) {
                    r2 = r + off[k]; c2 = c + off[k + 1]
                    if (r2 >= a || c2 >= b)
                        continue
                    d = task("mDiffFit"); dep(d, proj[r, c]); dep(d, proj[r2, c2])
                    diff[++nd] = d
                }
            }
        cf = task("mConcatFit")
        for (k = 1; k <= nd; k++)
            dep(cf, diff[k])
        bm = task("mBgModel"); dep(bm, cf)
        it = task("mImgtbl")
        for (r = 0; r < a; r++)
            for (c = 0; c < b; c++) {
                bg = task("mBackground"); dep(bg, bm); dep(bg, proj[r, c]); dep(it, bg)
            }
        ad = task("mAdd"); dep(ad, it)
        sh = task("mShrink"); dep(sh, ad)
        jp = task("mJPEG"); dep(jp, sh)
    }
    else if (family == "epigenomics") {
        mi = -1
        for (l = 1; l <= a; l++) {
            sp = task("fastQSplit")
            for (k = 1; k <= b; k++) {
                t1 = task("filterContams"); dep(t1, sp)
                t2 = task("sol2sanger"); dep(t2, t1)
                t3 = task("fast2bfq"); dep(t3, t2)
                mp[l, k] = task("map"); dep(mp[l, k], t3)
            }
            mm[l] = task("mapMerge")
            for (k = 1; k <= b; k++)
                dep(mm[l], mp[l, k])
        }
        mi = task("maqIndex")
        for (l = 1; l <= a; l++)
            dep(mi, mm[l])
        pu = task("pileup"); dep(pu, mi)
    }
    else if (family == "cybershake") {
        ns = 0
        for (e = 1; e <= a; e++) {
            x = task("ExtractSGT")
            for (k = 1; k <= b; k++) {
                s = task("SeismogramSynthesis"); dep(s, x)
                syn[++ns] = s
                pk[ns] = task("PeakValCalcOkaya"); dep(pk[ns], s)
            }
        }
        zs = task("ZipSeis")
        zp = task("ZipPSA")
        for (k = 1; k <= ns; k++) {
            dep(zs, syn[k]); dep(zp, pk[k])
        }
    }
    else if (family == "ligo") {
        for (gi = 1; gi <= a; gi++) {
            th = -1
            for (k = 1; k <= b; k++) {
                tb = task("TmpltBank")
                in1[k] = task("Inspiral"); dep(in1[k], tb)
            }
            th = task("Thinca")
            for (k = 1; k <= b; k++)
                dep(th, in1[k])
            for (k = 1; k <= b; k++) {
                tr = task("TrigBank"); dep(tr, th)
                in2[k] = task("Inspiral"); dep(in2[k], tr)
            }
            th2 = task("Thinca")
            for (k = 1; k <= b; k++)
                dep(th2, in2[k])
        }
    }
    else if (family == "sipht") {
        for (p = 1; p <= a; p++) {
            pc = task("Patser_concate")
            for (k = 1; k <= b; k++) {
                pa = task("Patser"); dep(pc, pa)
            }
            sr = task("SRNA")
            split("Transterm Findterm RNAMotif Blast", up, " ")
            for (k = 1; k <= 4; k++) {
                u = task(up[k]); dep(sr, u)
            }
            an = task("SRNA_annotate"); dep(an, pc)
            split("FFN_parse Blast_synteny Blast_candidate Blast_QRNA Blast_paralogues", dn, " ")
            for (k = 1; k <= 5; k++) {
                u = task(dn[k]); dep(u, sr); dep(an, u)
            }
        }
    }
    else if (family == "genome") {
        for (ch = 1; ch <= a; ch++) {
            mg = task("individuals_merge")
            for (k = 1; k <= b; k++) {
                iv = task("individuals"); dep(mg, iv)
            }
            sf = task("sifting")
            for (k = 1; k <= 7; k++) {
                mo = task("mutation_overlap"); dep(mo, mg); dep(mo, sf)
                fr = task("frequency"); dep(fr, mg); dep(fr, sf)
            }
        }
    }
    else if (family == "seismology") {
        w = -1
        for (k = 1; k <= a; k++)
            dc[k] = task("sG1IterDecon")
        w = task("wrapper_siftSTFByMisfit")
        for (k = 1; k <= a; k++)
            dep(w, dc[k])
    }
    else if (family == "soykb") {
        split("alignment_to_reference sort_sam dedup add_replace realign_target_creator indel_realign haplotype_caller", chain, " ")
        for (sm = 1; sm <= a; sm++) {
            prev = -1
            for (k = 1; k <= 7; k++) {
                x = task(chain[k])
                if (prev > 0)
                    dep(x, prev)
                prev = x
            }
            hc[sm] = prev
        }
        mgv = task("merge_gcvf")
        cv = task("combine_variants")
        for (sm = 1; sm <= a; sm++)
            dep(mgv, hc[sm])
        for (k = 1; k <= b; k++) {
            gt = task("genotype_gvcfs"); dep(cv, gt)
            for (sm = 1; sm <= a; sm++)
                dep(gt, hc[sm])
        }
        vs = task("select_variants_snp"); dep(vs, cv)
        vi = task("select_variants_indel"); dep(vi, cv)
        fs = task("filtering_snp"); dep(fs, vs)
        fi = task("filtering_indel"); dep(fi, vi)
    }
    else {
        print "wfgen.awk: unknown family \"" family "\"" > "/dev/stderr"
        exit 1
    }

    printf "# synthesized %s workflow (a = %d, b = %d, seed = %d): %d tasks, NOT a trace of a real run\n", family, a, b, seed, ntask
    for (t in count)
        types = types (types == "" ? "" : ", ") t " " count[t]
    printf "# task types: %s\n", types
    for (id = 1; id <= ntask; id++) {
        line = id " " cost[id] " " npred[id]
        for (k = 1; k <= npred[id]; k++)
            line = line " " pred[id, k]
        print line
    }
}
